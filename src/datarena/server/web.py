"""What every route module shares: request parsing within caps, CSRF, sessions, page rendering."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from datarena.server.auth import ApiError, same

if TYPE_CHECKING:
    from datarena.server.arena import Arena

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "datarena_csrf"
SESSION_COOKIE = "datarena_session"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request larger than {limit} bytes; upload a smaller file.")


async def body_limited(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 4096:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 4096:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def form(request: Request, limit: int):
    """Parse a form (urlencoded or multipart) held in memory, within the cap."""
    body = await body_limited(request, limit)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    clone = Request(request.scope, receive)
    return await clone.form(max_part_size=limit + 1)


async def streamed_form(request: Request, limit: int, max_files: int = 2):
    """Parse a multipart form whose files are spooled to disk as they arrive, refusing more than
    `limit` bytes (counted on the wire, whatever Content-Length claims)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 65536:
        raise too_large(limit)
    received = 0
    upstream = request.receive

    async def receive():
        nonlocal received
        message = await upstream()
        received += len(message.get("body", b""))
        if received > limit + 65536:
            raise too_large(limit)
        return message

    return await Request(request.scope, receive).form(max_files=max_files, max_fields=20)


async def json_body(request: Request) -> dict:
    try:
        payload = await request.json()
    except Exception:
        raise ApiError(422, "send a JSON object body (Content-Type: application/json).") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "send a JSON object body.")
    return payload


def csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def check_csrf(request: Request, data) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(data.get("csrf_token", ""))
    if not cookie or not sent or not same(cookie, sent):
        raise ApiError(403, "the form's CSRF token is missing or stale; reload the page and submit again.")


class Pages:
    """Renders templates with the session's team, the CSRF token and the challenge title."""

    def __init__(self, arena: Arena):
        self.arena = arena

    def session_team(self, request: Request):
        return self.arena.team_for_token(request.cookies.get(SESSION_COOKIE))

    def optional_team(self, request: Request):
        try:
            return self.session_team(request) if request.cookies.get(SESSION_COOKIE) else None
        except ApiError:
            return None

    def render(self, request: Request, template: str, ctx: dict, status: int = 200) -> HTMLResponse:
        token = csrf_token(request)
        resp = TEMPLATES.TemplateResponse(
            request, template,
            {"csrf_token": token, "team": self.optional_team(request), "title": self.arena.spec.title,
             "tracks": self.arena.track_links(), **ctx},
            status_code=status,
        )
        resp.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        resp.headers["X-Frame-Options"] = "DENY"
        return resp
