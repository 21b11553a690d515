"""FastAPI wiring: the routes every challenge has (teams, phases, jobs, login pages), then each
track's own routes (`Track.mount`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from datarena import __version__
from datarena.challenge.arena import Arena
from datarena.errors import (
    BudgetError,
    Busy,
    ConfigError,
    Conflict,
    DatarenaError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    RefusedError,
    SourceNotFoundError,
    SubmissionError,
    TooLarge,
    Unauthorized,
    Unsupported,
)
from datarena.http import web

# The one place where domain errors become status codes (the most specific class wins).
STATUS = {Invalid: 422, SubmissionError: 422, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
          BudgetError: 409, TooLarge: 413, Unsupported: 415, RateLimited: 429, Busy: 503,
          ConfigError: 500, SourceNotFoundError: 500}


def status_of(exc: DatarenaError) -> int:
    """A domain error's HTTP status: its class's, or 400 for any other error whose message says
    what the client should change."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


class ErrorBody(BaseModel):
    """Every refusal: `detail` says what to fix (more fields, e.g. `problems`, where useful)."""

    model_config = ConfigDict(extra="allow")
    detail: str | list[Any]


def _printable(value):
    """Strings as JSON can carry them (an undecodable byte from a client's file name is escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def create_app(arena: Arena) -> FastAPI:
    app = FastAPI(title=arena.spec.title, version=__version__,
                  responses={"4XX": {"model": ErrorBody, "description": "refused: `detail` says what to fix"}})
    app.state.arena = arena
    limit = arena.spec.max_upload_bytes
    pages = web.Pages(arena)
    app.state.upload_workers = arena.spec.upload_workers
    app.state.csrf_key = web.csrf_key(arena.server_secret())

    def refuse(request: Request, status: int, message: str, extra: dict, headers: dict | None = None):
        message, extra = _printable(message), _printable(extra)
        if request.url.path.startswith(("/api/", "/reveal")) or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": message, **extra}, status_code=status, headers=headers)
        return pages.render(request, "message.html", {"title": "Request refused", "message": message,
                                                      "problems": extra.get("problems", [])}, status=status)

    @app.exception_handler(DatarenaError)
    async def domain_error(request: Request, exc: DatarenaError):
        status = status_of(exc)
        headers = {}
        if isinstance(exc, RefusedError) and exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        extra = exc.extra if isinstance(exc, RefusedError) else {}
        return refuse(request, status, str(exc), extra, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return refuse(request, 422, "invalid request: " + "; ".join(parts) + ".", {})

    # ---------------------------------------------------------------- JSON API

    @app.get("/api/health")
    def health():
        return {"status": "ok", "version": __version__, "jobs": arena.jobs.mode}

    @app.post("/api/teams", status_code=201, openapi_extra=web.json_doc(web.REGISTRATION))
    async def api_register(request: Request):
        payload = await web.json_body(request)
        name, password = web.text_field(payload, "name"), web.text_field(payload, "password")
        team = await run_in_threadpool(arena.register, name, password, web.text_field(payload, "email", 254))
        return {"name": team.name, "validated": team.validated,
                "message": "registered; an organiser must validate the team before it can reveal or submit."}

    @app.post("/api/token", openapi_extra=web.json_doc(web.CREDENTIALS))
    async def api_token(request: Request):
        payload = await web.json_body(request)
        name, password = web.text_field(payload, "name"), web.text_field(payload, "password")
        team = await run_in_threadpool(arena.login, name, password, web.client_address(request))
        token = await run_in_threadpool(arena.issue_token, team)
        return {"token": token, "token_type": "bearer", "team": team.name, "validated": team.validated,
                "expires_in_s": int(arena.spec.session_lifetime_days * 86400)}

    @app.delete("/api/token")
    def api_revoke_token(request: Request):
        """Log out: the bearer token stops working at once."""
        token = web.bearer(request)
        arena.team_for_token(token)  # 401 for a token that is not (or no longer) valid
        arena.revoke_token(token)
        return {"revoked": True}

    @app.get("/api/tracks")
    def api_tracks():
        return arena.track_links()

    @app.get("/api/phases")
    def api_phases():
        return [arena.phase_json(p) for p in arena.phases()]

    @app.get("/api/phases/{phase_id}")
    def api_phase(phase_id: web.DbId):
        with arena.Session() as s:
            return arena.phase_json(arena.phase_by_id(s, phase_id))

    @app.get("/api/phases/{phase_id}/verification")
    def api_phase_verification(phase_id: web.DbId):
        return arena.verification(phase_id)

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: web.DbId, request: Request):
        """A team's own job: state, progress (step, total, rate, ETA), result, failure reason."""
        team = arena.team_for_token(web.bearer(request))
        try:
            job = arena.jobs.get(job_id)
        except DatarenaError:
            job = None
        if job is None or job.team_id != team.id:
            raise NotFound(f"no job {job_id} of team {team.name!r}.")
        body = job.as_json(private=False)
        if body["result"]:
            body["result"].pop("artefacts", None)  # server paths are the organiser's business
        return body

    # ---------------------------------------------------------------- pages every challenge has

    @app.get("/register", response_class=HTMLResponse, include_in_schema=False)
    def page_register(request: Request):
        return pages.render(request, "register.html", {})

    @app.post("/register", response_class=HTMLResponse, include_in_schema=False)
    async def page_register_post(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        name, password = web.text_field(data, "name"), web.text_field(data, "password")
        team = await run_in_threadpool(arena.register, name, password, web.text_field(data, "email", 254))
        return pages.render(request, "message.html", {
            "title": "Team registered",
            "message": f"Team {team.name} is registered. An organiser must validate it before it can reveal or submit.",
        }, status=201)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def page_login(request: Request):
        return pages.render(request, "login.html", {})

    @app.post("/login", include_in_schema=False)
    async def page_login_post(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        name, password = web.text_field(data, "name"), web.text_field(data, "password")
        team = await run_in_threadpool(arena.login, name, password, web.client_address(request))
        token = await run_in_threadpool(arena.issue_token, team)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(web.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        max_age=int(arena.spec.session_lifetime_days * 86400))
        return resp

    @app.post("/logout", include_in_schema=False)
    async def page_logout(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        await run_in_threadpool(arena.revoke_token, request.cookies.get(web.SESSION_COOKIE))
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(web.SESSION_COOKIE)
        return resp

    from datarena.http import console
    from datarena.http.routes import mount_track

    console.mount(app, pages, limit)

    for track in arena.tracks.values():
        mount_track(track, app, pages)
    if "/" not in {getattr(r, "path", None) for r in app.routes}:  # no labels track: home = first track

        @app.get("/", include_in_schema=False)
        def home():
            return RedirectResponse(next(iter(arena.tracks.values())).url(), status_code=303)

    return app
