"""HTTP routes of a `dataset` track (the domain logic is `challenge/tracks/dataset.py`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from datarena.challenge.teams import TeamRef
from datarena.challenge.tracks.dataset import MB, DatasetTrack
from datarena.errors import (
    Invalid,
    NotFound,
    RefusedError,
    Unsupported,
)
from datarena.http import web


def mount(track: DatasetTrack, app: FastAPI, pages: web.Pages) -> None:
    """The dataset track's API routes and pages: parse the request, call the track, shape the answer."""
    arena, base, limit = track.arena, f"/api/tracks/{track.id}", int(track.spec.max_upload_mb * MB)

    async def receive_upload(request: Request, field: str = "file"):
        """The multipart form (its file spooled to disk by the parser, within the cap); the
        caller closes it."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise Unsupported(f"send multipart/form-data with the archive in the field '{field}' "
                                f"(got Content-Type {ctype[:80] or 'none'!r}).")
        data = await web.streamed_form(request, limit)
        upload = data.get(field)
        if upload is None or isinstance(upload, str):
            await data.close()
            raise Invalid(f"attach the dataset (.zip, .tar or .npz) as the multipart field '{field}'.")
        return data, upload

    async def spooled(upload) -> Path:
        """Copy the parser's spool into the staging directory (a named file the checks can open)."""
        fd, name = tempfile.mkstemp(prefix="upload-", dir=track._staging())
        with os.fdopen(fd, "wb") as fh:  # the descriptor mkstemp opened is closed here
            while chunk := await upload.read(1 << 20):
                fh.write(chunk)
        return Path(name)

    async def accept(request: Request, team: TeamRef, form=None) -> dict:
        data, upload = form or await receive_upload(request)
        try:
            path = await spooled(upload)
        finally:
            await data.close()  # the parser's spooled file: closed whatever happens next
        try:
            fields = {k: _text_field(data, k) for k in ("seed", "checksum", "method")}
            return await web.in_upload_pool(request, track.submit, team, path, upload.filename or "", fields)
        finally:
            path.unlink(missing_ok=True)

    @app.get(base)
    def api_track():
        return track.info()

    @app.post(f"{base}/submissions", status_code=202, openapi_extra=web.multipart_doc(
        "file", seed={"type": "string", "maxLength": 64}, checksum={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        method={"type": "string", "maxLength": 4000}))
    async def api_submit(request: Request):
        team = await run_in_threadpool(arena.team_for_token, web.bearer(request))
        return await accept(request, team)

    @app.get(f"{base}/submissions")
    def api_my_submissions(request: Request):
        return {"track": track.id, "submissions": track.submissions_of(arena.team_for_token(web.bearer(request)))}

    @app.get(f"{base}/submissions/{{sub_id}}/overlays.png", response_class=Response,
             responses=web.binary_doc("image/png"))
    def api_overlays(sub_id: web.DbId, request: Request):
        team = pages.optional_team(request) or arena.team_for_token(web.bearer(request))
        track.own_submission(team, sub_id)
        path = track.root / "submissions" / str(sub_id) / "score" / "overlays.png"
        if not path.is_file():
            raise NotFound("no overlays yet: the submission is not scored.")
        return FileResponse(path, media_type="image/png")

    @app.post(f"{base}/submissions/{{sub_id}}/claim", openapi_extra=web.multipart_doc(
        "code", score={"type": "string"}))
    async def api_claim(sub_id: web.DbId, request: Request):
        team = await run_in_threadpool(arena.team_for_token, web.bearer(request))
        data, upload = await receive_upload(request, "code")
        try:
            path = await spooled(upload)
        finally:
            await data.close()
        try:
            return await web.in_upload_pool(request, track.claim, team, sub_id, _text_field(data, "score"), path,
                                            upload.filename or "code.zip")
        finally:
            path.unlink(missing_ok=True)

    @app.post(f"{base}/submissions/{{sub_id}}/select")
    def api_select(sub_id: web.DbId, request: Request):
        """The team's final entry, ranked on the private part of the test set when the phase closes."""
        return track.select(arena.team_for_token(web.bearer(request)), sub_id)

    @app.get(f"{base}/leaderboard")
    def api_board(phase: web.OptionalDbId = None):
        return track.leaderboard(phase)

    @app.get(f"{base}/test-set.zip", response_class=Response, responses=web.binary_doc("application/zip"))
    def api_test_set():
        return Response(track.test_set_zip(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{track.id}-test-set.zip"'})

    @app.get(track.url(), response_class=HTMLResponse, include_in_schema=False)
    def page_track(request: Request, phase: web.OptionalDbId = None):
        team = pages.optional_team(request)
        mine = track.submissions_of(team) if team else None
        return pages.render(request, "track.html", {"board": track.leaderboard(phase), "mine": mine,
                                                    "track": track, "phases": arena.phases()})

    @app.post(f"{track.url()}/submit", include_in_schema=False)
    async def page_submit(request: Request):
        team = await run_in_threadpool(pages.session_team, request)
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise Unsupported("send the form as multipart/form-data.")
        data, upload = await receive_upload(request)
        try:
            web.check_csrf(request, data)
        except RefusedError:
            await data.close()
            raise
        await accept(request, team, (data, upload))
        return RedirectResponse(track.url(), status_code=303)


def _text_field(data, key: str) -> str | None:
    """A plain form field; a file sent under that name is refused, not read."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Invalid(f"the form field {key!r} must be text, not a file.")
