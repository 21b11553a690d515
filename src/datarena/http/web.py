"""What every route module shares: request parsing within caps, CSRF, sessions, page rendering."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from datarena.challenge.auth import same
from datarena.errors import Forbidden, Invalid, RefusedError, TooLarge

if TYPE_CHECKING:
    from datarena.challenge.arena import Arena

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "datarena_csrf"
SESSION_COOKIE = "datarena_session"
ORGANISER_COOKIE = "datarena_organiser"  # path /organiser: team pages never carry it
MAX_ID = 2**63 - 1  # database ids are signed 64-bit: a larger one is a client's error, not the database's
MAX_JSON_BYTES = 64 << 10  # every JSON body the API takes is a few fields

DbId = Annotated[int, PathParam(ge=0, le=MAX_ID)]
OptionalDbId = Annotated[int | None, Query(ge=0, le=MAX_ID)]

# Checking an upload (unpacking, decoding images) runs on its own small pool of threads, one per
# app (an anyio limiter belongs to the event loop that serves it), so uploads queue behind each
# other and never take the threads that reveals and pages run on.


async def in_upload_pool(request: Request, fn, *args):
    state = request.app.state
    limiter = getattr(state, "upload_limiter", None)
    if limiter is None:
        limiter = state.upload_limiter = anyio.CapacityLimiter(getattr(state, "upload_workers", 2))
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"request larger than {limit} bytes; upload a smaller file.")


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


async def json_body(request: Request, limit: int = MAX_JSON_BYTES) -> dict:
    """A JSON object body of at most `limit` bytes (counted as it arrives)."""
    try:
        body = await body_limited(request, limit)
    except RefusedError:
        raise TooLarge(f"JSON body larger than {limit} bytes; send only the documented fields.") from None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise Invalid("send a JSON object body (Content-Type: application/json).") from None
    if not isinstance(payload, dict):
        raise Invalid("send a JSON object body.")
    return payload


def text_field(payload: dict, key: str, max_len: int = 1024) -> str:
    """A string field of a JSON body or form ('' when absent); anything else is the client's error."""
    value = payload.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{key!r} must be a string, got {type(value).__name__}.")
    if len(value) > max_len:
        raise Invalid(f"{key!r} is longer than {max_len} characters.")
    return value


# ---------------------------------------------------------------- request bodies in the OpenAPI schema
# Bodies are read by hand (within caps, with messages that say what to fix); these describe them
# to clients and to the schema fuzzer.

CREDENTIALS = {
    "type": "object", "required": ["name", "password"], "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"},
                   "password": {"type": "string", "minLength": 8, "maxLength": 256}},
}


REGISTRATION = {**CREDENTIALS, "properties": {
    **CREDENTIALS["properties"],
    "email": {"type": "string", "maxLength": 254, "description": "optional: where notifications go (never served)"}}}


def binary_doc(*media_types: str) -> dict:
    """`responses=` for a route that answers with a file."""
    return {200: {"description": "the file", "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                                          for m in media_types}}}


def json_doc(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def multipart_doc(file_field: str, **text_fields: dict) -> dict:
    props = {file_field: {"type": "string", "format": "binary"}, **text_fields}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": [file_field], "properties": props}}}}}


# ---------------------------------------------------------------- CSRF
# The cookie holds a random nonce; the form carries HMAC(server key, nonce | session). A cookie an
# attacker planted does not help without the server's key, and a token of one session does not
# pass in another.

def csrf_key(server_secret: bytes) -> bytes:
    """The app's CSRF key (app.state.csrf_key), derived from the server secret."""
    return hmac.new(server_secret, b"datarena csrf v1", hashlib.sha256).digest()


def _csrf_for(request: Request, nonce: str, session: str) -> str:
    mac = hmac.new(request.app.state.csrf_key, f"{nonce}|{session}".encode(), hashlib.sha256)
    return mac.hexdigest()


def csrf_nonce(request: Request) -> str:
    nonce = request.cookies.get(CSRF_COOKIE, "")
    return nonce if 16 <= len(nonce) <= 64 and nonce.isascii() else secrets.token_urlsafe(24)


def csrf_token(request: Request, nonce: str | None = None, session_cookie: str = SESSION_COOKIE) -> str:
    return _csrf_for(request, nonce or csrf_nonce(request), request.cookies.get(session_cookie, ""))


def check_csrf(request: Request, data, session_cookie: str = SESSION_COOKIE) -> None:
    """The form's token must be the HMAC of this browser's nonce and its session (the team's, or the
    organiser's for console forms)."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    sent = data.get("csrf_token", "")
    expected = _csrf_for(request, nonce, request.cookies.get(session_cookie, ""))
    if not nonce or not isinstance(sent, str) or not sent or not same(expected, sent):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page and submit again.")


class Pages:
    """Renders templates with the session's team, the CSRF token and the challenge title."""

    def __init__(self, arena: Arena):
        self.arena = arena

    def session_team(self, request: Request):
        return self.arena.team_for_token(request.cookies.get(SESSION_COOKIE))

    def optional_team(self, request: Request):
        try:
            return self.session_team(request) if request.cookies.get(SESSION_COOKIE) else None
        except RefusedError:
            return None

    def render(self, request: Request, template: str, ctx: dict, status: int = 200,
               session_cookie: str = SESSION_COOKIE) -> HTMLResponse:
        nonce = csrf_nonce(request)
        team = self.optional_team(request) if session_cookie == SESSION_COOKIE else None
        resp = TEMPLATES.TemplateResponse(
            request, template,
            {"csrf_token": csrf_token(request, nonce, session_cookie), "team": team,
             "title": self.arena.spec.title, "tracks": self.arena.track_links(), **ctx},
            status_code=status,
        )
        resp.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict")
        resp.headers["X-Frame-Options"] = "DENY"
        return resp
