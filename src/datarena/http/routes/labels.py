"""HTTP routes of a `labels` track (the domain logic is `challenge/tracks/labels.py`)."""

from __future__ import annotations

import io
import zipfile

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from datarena.challenge.catalogue import ExerciseInfo
from datarena.challenge.tracks.labels import LabelsTrack
from datarena.errors import Invalid, NotFound
from datarena.http import web


def mount(track: LabelsTrack, app: FastAPI, pages: web.Pages) -> None:
    """The labels track's API routes and pages: parse the request, call the track, shape the answer."""
    arena, limit = track.arena, track.arena.spec.max_upload_bytes

    def current(exercise_id: str) -> ExerciseInfo:
        return track.exercise(arena.current_phase(), exercise_id)

    @app.get("/api/exercises")
    def api_exercises():
        phase = arena.current_phase()
        return {"phase": phase.name, "reveal_budget": arena.spec.reveal_budget,
                "submissions_per_exercise": arena.spec.submissions_per_exercise,
                "exercises": [_exercise_json(e) for e in track.exercises(phase)]}

    @app.get("/api/exercises/{exercise_id}")
    def api_exercise(exercise_id: str):
        return _exercise_json(current(exercise_id))

    @app.get("/api/exercises/{exercise_id}/files/{filename}", response_class=Response,
             responses=web.binary_doc("application/octet-stream", "application/json", "image/png", "text/plain"))
    def api_file(exercise_id: str, filename: str):
        info = current(exercise_id)
        if filename not in info.public_files():
            raise NotFound(f"no public file {filename!r}; files are {', '.join(info.public_files())}.")
        return FileResponse(info.public_dir / filename, filename=filename)

    @app.get("/api/exercises/{exercise_id}/download.zip", response_class=Response,
             responses=web.binary_doc("application/zip"))
    def api_zip(exercise_id: str):
        info = current(exercise_id)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in info.public_files():
                zf.write(info.public_dir / f, f"{info.dirname}/{f}")
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{info.dirname}.zip"'})

    def token_reveal(token: str | None, exercise_id: str, payload: dict) -> dict:
        team = arena.team_for_token(token)
        if "datum_id" not in payload:
            raise Invalid('send {"datum_id": <row index of X_val>}.')
        return track.reveal(team, exercise_id, payload["datum_id"]).as_json()

    @app.post("/api/exercises/{exercise_id}/reveal", openapi_extra=web.json_doc({
        "type": "object", "required": ["datum_id"],
        "properties": {"datum_id": {"type": "integer", "minimum": 0, "description": "row of X_val"}}}))
    async def api_reveal(exercise_id: str, request: Request):
        token = web.bearer(request)
        await run_in_threadpool(arena.team_for_token, token)  # 401 before the body is read
        payload = await web.json_body(request)
        return await run_in_threadpool(token_reveal, token, exercise_id, payload)

    @app.get("/api/exercises/{exercise_id}/reveals")
    def api_reveals(exercise_id: str, request: Request):
        team = arena.team_for_token(web.bearer(request))
        phase = arena.current_phase()
        info = track.exercise(phase, exercise_id)
        return {"exercise_id": info.number, "reveals": track.reveals_of(team, phase, info),
                "budget": arena.spec.reveal_budget}

    @app.post("/api/exercises/{exercise_id}/submission", status_code=201, openapi_extra={"requestBody": {
        "required": True, "description": "one integer label per target row, no header",
        "content": {"text/csv": {"schema": {"type": "string"}},
                    "multipart/form-data": web.multipart_doc("file")["requestBody"]["content"]["multipart/form-data"]}}})
    async def api_submit(exercise_id: str, request: Request):
        team = await run_in_threadpool(arena.team_for_token, web.bearer(request))
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data = await _upload_bytes(await web.form(request, limit), "attach the CSV as the multipart field 'file'.")
        else:
            data = await web.body_limited(request, limit)
        return await run_in_threadpool(track.submit, team, exercise_id, data)

    @app.get("/api/leaderboard")
    def api_leaderboard(phase: web.OptionalDbId = None):
        return track.leaderboard(phase)

    @app.post("/reveal/", openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["username", "password", "exercise_id", "datum_id"],
            "properties": {"username": web.CREDENTIALS["properties"]["name"],
                           "password": web.CREDENTIALS["properties"]["password"],
                           "exercise_id": {"type": "string"}, "datum_id": {"type": "integer", "minimum": 0}}}}}}})
    @app.post("/reveal", include_in_schema=False)
    async def form_reveal(request: Request):
        """The original hackathon42 call: form fields username, password, exercise_id, datum_id."""
        data = await web.form(request, limit)
        missing = [f for f in ("username", "password", "exercise_id", "datum_id")
                   if not isinstance(data.get(f), str) or not data.get(f)]
        if missing:
            raise Invalid(f"missing form fields: {', '.join(missing)} "
                                f"(username, password, exercise_id, datum_id).")
        team = await run_in_threadpool(arena.login, str(data["username"]), str(data["password"]),
                                       web.client_address(request))
        res = await run_in_threadpool(track.reveal, team, str(data["exercise_id"]), str(data["datum_id"]))
        return res.as_json()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/leaderboard", response_class=HTMLResponse, include_in_schema=False)
    def page_leaderboard(request: Request, phase: web.OptionalDbId = None):
        return pages.render(request, "leaderboard.html", {"board": track.leaderboard(phase), "phases": arena.phases()})

    @app.get("/exercises/{exercise_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_exercise(exercise_id: str, request: Request):
        phase = arena.current_phase()
        info = track.exercise(phase, exercise_id)
        team = pages.optional_team(request)
        reveals = track.reveals_of(team, phase, info) if team else None
        return pages.render(request, "exercise.html", {"ex": info, "phase": phase, "reveals": reveals,
                                                       "budget": arena.spec.reveal_budget})

    @app.post("/exercises/{exercise_id}/submit", response_class=HTMLResponse, include_in_schema=False)
    async def page_submit(exercise_id: str, request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data)
        team = await run_in_threadpool(pages.session_team, request)
        csv_bytes = await _upload_bytes(data, "choose a CSV file to upload.")
        res = await run_in_threadpool(track.submit, team, exercise_id, csv_bytes)
        return pages.render(request, "message.html", {
            "title": "Submission accepted",
            "message": f"Exercise {res['exercise_id']}: accuracy {res['accuracy']:.3f}. "
                       f"It now counts on the leaderboard.",
        }, status=201)


async def _upload_bytes(data, missing_message: str) -> bytes:
    upload = data.get("file")
    if upload is None or isinstance(upload, str):
        raise Invalid(missing_message)
    return await upload.read()


def _exercise_json(e: ExerciseInfo) -> dict:
    return {"id": e.id, "name": e.name, "description": e.description, "points": e.points,
            "default_score": e.default_score, "classes": list(e.classes), "n_target": e.n_target,
            "files": e.public_files()}
