"""FastAPI wiring: JSON API, the hackathon42 form endpoint, and the HTML pages."""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from datarena import __version__
from datarena.errors import DatarenaError
from datarena.server.arena import Arena
from datarena.server.auth import ApiError, same

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "datarena_csrf"
SESSION_COOKIE = "datarena_session"


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


async def _body_limited(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 4096:
        raise ApiError(413, f"request larger than {limit} bytes; upload a smaller file.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 4096:
            raise ApiError(413, f"request larger than {limit} bytes; upload a smaller file.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request, limit: int):
    """Parse a form (urlencoded or multipart) within the upload cap."""
    body = await _body_limited(request, limit)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    clone = Request(request.scope, receive)
    return await clone.form(max_part_size=limit + 1)


def _csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def _check_csrf(request: Request, form) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf_token", ""))
    if not cookie or not sent or not same(cookie, sent):
        raise ApiError(403, "the form's CSRF token is missing or stale; reload the page and submit again.")


def create_app(arena: Arena) -> FastAPI:
    app = FastAPI(title=arena.spec.title, version=__version__)
    app.state.arena = arena
    limit = arena.spec.max_upload_bytes

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        if request.url.path.startswith(("/api/", "/reveal")) or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)
        return _page(request, "message.html", {"title": "Request refused", "message": exc.message},
                     status=exc.status)

    def _page(request: Request, template: str, ctx: dict, status: int = 200) -> HTMLResponse:
        token = _csrf_token(request)
        team = None
        sess = request.cookies.get(SESSION_COOKIE)
        if sess:
            try:
                team = arena.team_for_token(sess)
            except ApiError:
                team = None
        resp = TEMPLATES.TemplateResponse(
            request, template, {"csrf_token": token, "team": team, "title": arena.spec.title, **ctx},
            status_code=status,
        )
        resp.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    def _session_team(request: Request):
        return arena.team_for_token(request.cookies.get(SESSION_COOKIE))

    # ---------------------------------------------------------------- JSON API

    @app.get("/api/health")
    def health():
        return {"status": "ok", "version": __version__}

    @app.post("/api/teams", status_code=201)
    async def api_register(request: Request):
        payload = await _json(request)
        team = await run_in_threadpool(arena.register, payload.get("name", ""), payload.get("password", ""))
        return {"name": team.name, "validated": team.validated,
                "message": "registered; an organiser must validate the team before it can reveal or submit."}

    @app.post("/api/token")
    async def api_token(request: Request):
        payload = await _json(request)
        team = await run_in_threadpool(arena.login, payload.get("name", ""), payload.get("password", ""), _client(request))
        token = await run_in_threadpool(arena.issue_token, team)
        return {"token": token, "token_type": "bearer", "team": team.name, "validated": team.validated}

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

    @app.get("/api/exercises")
    def api_exercises():
        phase = arena.current_phase()
        return {"phase": phase.name, "reveal_budget": arena.spec.reveal_budget,
                "submissions_per_exercise": arena.spec.submissions_per_exercise,
                "exercises": [_exercise_json(e) for e in arena.exercises(phase)]}

    @app.get("/api/exercises/{exercise_id}")
    def api_exercise(exercise_id: str):
        phase = arena.current_phase()
        return _exercise_json(arena.exercise(phase, exercise_id))

    @app.get("/api/exercises/{exercise_id}/files/{filename}")
    def api_file(exercise_id: str, filename: str):
        phase = arena.current_phase()
        info = arena.exercise(phase, exercise_id)
        if filename not in info.public_files():
            raise ApiError(404, f"no public file {filename!r}; files are {', '.join(info.public_files())}.")
        return FileResponse(info.public_dir / filename, filename=filename)

    @app.get("/api/exercises/{exercise_id}/download.zip")
    def api_zip(exercise_id: str):
        phase = arena.current_phase()
        info = arena.exercise(phase, exercise_id)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in info.public_files():
                zf.write(info.public_dir / f, f"{info.dirname}/{f}")
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{info.dirname}.zip"'})

    def _token_reveal(token: str | None, exercise_id: str, payload: dict) -> dict:
        team = arena.team_for_token(token)
        if "datum_id" not in payload:
            raise ApiError(422, 'send {"datum_id": <row index of X_val>}.')
        return arena.reveal(team, exercise_id, payload["datum_id"]).as_json()

    @app.post("/api/exercises/{exercise_id}/reveal")
    async def api_reveal(exercise_id: str, request: Request):
        payload = await _json(request)
        return await run_in_threadpool(_token_reveal, _bearer(request), exercise_id, payload)

    @app.get("/api/exercises/{exercise_id}/reveals")
    def api_reveals(exercise_id: str, request: Request):
        team = arena.team_for_token(_bearer(request))
        phase = arena.current_phase()
        info = arena.exercise(phase, exercise_id)
        return {"exercise_id": info.number, "reveals": arena.reveals_of(team, phase, info),
                "budget": arena.spec.reveal_budget}

    @app.post("/api/exercises/{exercise_id}/submission", status_code=201)
    async def api_submit(exercise_id: str, request: Request):
        team = await run_in_threadpool(arena.team_for_token, _bearer(request))
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await _form(request, limit)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "attach the CSV as the multipart field 'file'.")
            data = await upload.read()
        else:
            data = await _body_limited(request, limit)
        return await run_in_threadpool(arena.submit, team, exercise_id, data)

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: int, request: Request):
        """A team's own job: state, progress (step, total, rate, ETA), result, failure reason."""
        team = arena.team_for_token(_bearer(request))
        try:
            job = arena.jobs.get(job_id)
        except DatarenaError:
            job = None
        if job is None or job.team_id != team.id:
            raise ApiError(404, f"no job {job_id} of team {team.name!r}.")
        return job.as_json(private=False)

    @app.get("/api/leaderboard")
    def api_leaderboard(phase: int | None = None):
        return arena.leaderboard(phase)

    # ---------------------------------------------------------------- hackathon42 form endpoint

    @app.post("/reveal/")
    @app.post("/reveal", include_in_schema=False)
    async def form_reveal(request: Request):
        form = await _form(request, limit)
        missing = [f for f in ("username", "password", "exercise_id", "datum_id") if not form.get(f)]
        if missing:
            raise ApiError(422, f"missing form fields: {', '.join(missing)} (username, password, exercise_id, datum_id).")
        team = await run_in_threadpool(arena.login, str(form["username"]), str(form["password"]), _client(request))
        res = await run_in_threadpool(arena.reveal, team, str(form["exercise_id"]), str(form["datum_id"]))
        return res.as_json()

    # ---------------------------------------------------------------- HTML pages

    @app.get("/", response_class=HTMLResponse)
    @app.get("/leaderboard", response_class=HTMLResponse, include_in_schema=False)
    def page_leaderboard(request: Request, phase: int | None = None):
        board = arena.leaderboard(phase)
        return _page(request, "leaderboard.html", {"board": board, "phases": arena.phases()})

    @app.get("/register", response_class=HTMLResponse)
    def page_register(request: Request):
        return _page(request, "register.html", {})

    @app.post("/register", response_class=HTMLResponse)
    async def page_register_post(request: Request):
        form = await _form(request, limit)
        _check_csrf(request, form)
        team = await run_in_threadpool(arena.register, str(form.get("name", "")), str(form.get("password", "")))
        return _page(request, "message.html", {
            "title": "Team registered",
            "message": f"Team {team.name} is registered. An organiser must validate it before it can reveal or submit.",
        }, status=201)

    @app.get("/login", response_class=HTMLResponse)
    def page_login(request: Request):
        return _page(request, "login.html", {})

    @app.post("/login")
    async def page_login_post(request: Request):
        form = await _form(request, limit)
        _check_csrf(request, form)
        team = await run_in_threadpool(arena.login, str(form.get("name", "")), str(form.get("password", "")), _client(request))
        token = await run_in_threadpool(arena.issue_token, team)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax")
        return resp

    @app.post("/logout")
    async def page_logout(request: Request):
        form = await _form(request, limit)
        _check_csrf(request, form)
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/exercises/{exercise_id}", response_class=HTMLResponse)
    def page_exercise(exercise_id: str, request: Request):
        phase = arena.current_phase()
        info = arena.exercise(phase, exercise_id)
        reveals = None
        try:
            team = _session_team(request)
            reveals = arena.reveals_of(team, phase, info)
        except ApiError:
            team = None
        return _page(request, "exercise.html", {"ex": info, "phase": phase, "reveals": reveals,
                                                "budget": arena.spec.reveal_budget})

    @app.post("/exercises/{exercise_id}/submit", response_class=HTMLResponse)
    async def page_submit(exercise_id: str, request: Request):
        form = await _form(request, limit)
        _check_csrf(request, form)
        team = await run_in_threadpool(_session_team, request)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "choose a CSV file to upload.")
        data = await upload.read()
        res = await run_in_threadpool(arena.submit, team, exercise_id, data)
        return _page(request, "message.html", {
            "title": "Submission accepted",
            "message": f"Exercise {res['exercise_id']}: accuracy {res['accuracy']:.3f}. It now counts on the leaderboard.",
        }, status=201)

    return app


async def _json(request: Request) -> dict:
    try:
        payload = await request.json()
    except Exception:
        raise ApiError(422, "send a JSON object body (Content-Type: application/json).") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "send a JSON object body.")
    return payload


def _exercise_json(e) -> dict:
    return {"id": e.id, "name": e.name, "description": e.description, "points": e.points,
            "default_score": e.default_score, "classes": list(e.classes), "n_target": e.n_target,
            "files": e.public_files()}
