"""FastAPI wiring: the routes every challenge has (teams, phases, jobs, login pages), then each
track's own routes (`Track.mount`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from datarena import __version__
from datarena.errors import DatarenaError
from datarena.server import web
from datarena.server.arena import Arena
from datarena.server.auth import ApiError


def create_app(arena: Arena) -> FastAPI:
    app = FastAPI(title=arena.spec.title, version=__version__)
    app.state.arena = arena
    limit = arena.spec.max_upload_bytes
    pages = web.Pages(arena)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        if request.url.path.startswith(("/api/", "/reveal")) or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.message, **exc.extra}, status_code=exc.status, headers=exc.headers)
        return pages.render(request, "message.html", {"title": "Request refused", "message": exc.message,
                                                      "problems": exc.extra.get("problems", [])}, status=exc.status)

    # ---------------------------------------------------------------- JSON API

    @app.get("/api/health")
    def health():
        return {"status": "ok", "version": __version__, "jobs": arena.jobs.mode}

    @app.post("/api/teams", status_code=201)
    async def api_register(request: Request):
        payload = await web.json_body(request)
        team = await run_in_threadpool(arena.register, payload.get("name", ""), payload.get("password", ""))
        return {"name": team.name, "validated": team.validated,
                "message": "registered; an organiser must validate the team before it can reveal or submit."}

    @app.post("/api/token")
    async def api_token(request: Request):
        payload = await web.json_body(request)
        team = await run_in_threadpool(arena.login, payload.get("name", ""), payload.get("password", ""),
                                       web.client_address(request))
        token = await run_in_threadpool(arena.issue_token, team)
        return {"token": token, "token_type": "bearer", "team": team.name, "validated": team.validated}

    @app.get("/api/tracks")
    def api_tracks():
        return arena.track_links()

    @app.get("/api/phases")
    def api_phases():
        return [arena.phase_json(p) for p in arena.phases()]

    @app.get("/api/phases/{phase_id}")
    def api_phase(phase_id: int):
        with arena.Session() as s:
            return arena.phase_json(arena.phase_by_id(s, phase_id))

    @app.get("/api/phases/{phase_id}/verification")
    def api_phase_verification(phase_id: int):
        return arena.verification(phase_id)

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: int, request: Request):
        """A team's own job: state, progress (step, total, rate, ETA), result, failure reason."""
        team = arena.team_for_token(web.bearer(request))
        try:
            job = arena.jobs.get(job_id)
        except DatarenaError:
            job = None
        if job is None or job.team_id != team.id:
            raise ApiError(404, f"no job {job_id} of team {team.name!r}.")
        body = job.as_json(private=False)
        if body["result"]:
            body["result"].pop("artefacts", None)  # server paths are the organiser's business
        return body

    # ---------------------------------------------------------------- pages every challenge has

    @app.get("/register", response_class=HTMLResponse)
    def page_register(request: Request):
        return pages.render(request, "register.html", {})

    @app.post("/register", response_class=HTMLResponse)
    async def page_register_post(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        team = await run_in_threadpool(arena.register, str(data.get("name", "")), str(data.get("password", "")))
        return pages.render(request, "message.html", {
            "title": "Team registered",
            "message": f"Team {team.name} is registered. An organiser must validate it before it can reveal or submit.",
        }, status=201)

    @app.get("/login", response_class=HTMLResponse)
    def page_login(request: Request):
        return pages.render(request, "login.html", {})

    @app.post("/login")
    async def page_login_post(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        team = await run_in_threadpool(arena.login, str(data.get("name", "")), str(data.get("password", "")),
                                       web.client_address(request))
        token = await run_in_threadpool(arena.issue_token, team)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(web.SESSION_COOKIE, token, httponly=True, samesite="lax")
        return resp

    @app.post("/logout")
    async def page_logout(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(web.SESSION_COOKIE)
        return resp

    for track in arena.tracks.values():
        track.mount(app, pages)
    if "/" not in {getattr(r, "path", None) for r in app.routes}:  # no labels track: home = first track

        @app.get("/", include_in_schema=False)
        def home():
            return RedirectResponse(next(iter(arena.tracks.values())).url(), status_code=303)

    return app
