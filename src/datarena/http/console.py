"""The organiser console (/organiser/...) and the public record of board changes (/changes).

Server-rendered pages that work without JavaScript. Every route under /organiser except the login
form needs an organiser session (its own cookie, path /organiser; no team token or team session
reaches it); every form carries a CSRF token bound to that session. Each action calls the same
`challenge.organisers` function the admin CLI calls, with the organiser as actor.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from datarena.challenge.organisers import TEAM_ACTIONS, OrganiserRef
from datarena.db import utcnow
from datarena.errors import Invalid, NotFound, Unauthorized
from datarena.http import web

PREFIX = "/organiser"


class LoginRequired(Exception):
    """A console page asked for without an organiser session (answered with a redirect to the login)."""
TEAM_STATES = ("pending", "validated", "refused", "disabled")


def mount(app: FastAPI, pages: web.Pages, limit: int) -> None:
    arena = pages.arena

    def organiser(request: Request) -> OrganiserRef:
        return arena.organiser_for_session(request.cookies.get(web.ORGANISER_COOKIE))

    def page(request: Request, template: str, ctx: dict, status: int = 200) -> HTMLResponse:
        return pages.render(request, template, {"organiser": ctx.pop("organiser", None), **ctx}, status,
                            session_cookie=web.ORGANISER_COOKIE)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    def page_organiser(request: Request) -> OrganiserRef:
        """The organiser of a console page; without a session the browser goes to the login form."""
        try:
            return organiser(request)
        except Unauthorized:
            raise LoginRequired() from None

    async def action_form(request: Request) -> tuple[OrganiserRef, dict]:
        who = await run_in_threadpool(organiser, request)
        data = await web.form(request, limit)
        web.check_csrf(request, data, web.ORGANISER_COOKIE)
        return who, data

    # ---------------------------------------------------------------- session

    @app.get(f"{PREFIX}/login", response_class=HTMLResponse, include_in_schema=False)
    def console_login(request: Request):
        return page(request, "console_login.html", {})

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    async def console_login_post(request: Request):
        data = await web.form(request, limit)
        web.check_csrf(request, data, web.ORGANISER_COOKIE)
        token = await run_in_threadpool(
            arena.organiser_login, web.text_field(data, "name"), web.text_field(data, "password"),
            web.text_field(data, "code", 16), web.client_address(request))
        resp = RedirectResponse(PREFIX, status_code=303)
        resp.set_cookie(web.ORGANISER_COOKIE, token, path=PREFIX, httponly=True, samesite="strict")
        return resp

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    async def console_logout(request: Request):
        await action_form(request)
        await run_in_threadpool(arena.organiser_logout, request.cookies.get(web.ORGANISER_COOKIE))
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(web.ORGANISER_COOKIE, path=PREFIX)
        return resp

    # ---------------------------------------------------------------- pages

    @app.get(PREFIX, response_class=HTMLResponse, include_in_schema=False)
    def console_overview(request: Request):
        who = page_organiser(request)
        try:
            phase = arena.phase_json(arena.current_phase())
        except NotFound:
            phase = None
        since = utcnow() - timedelta(hours=1)
        jobs = arena.jobs.list(limit=200)
        queue = {"queued": sum(j.state == "queued" for j in jobs), "running": sum(j.state == "running" for j in jobs),
                 "failed": sum(j.state == "failed" and (j.finished_at or j.created_at) >= since for j in jobs)}
        recent = sorted((row for t in arena.tracks.values() for row in t.export_rows()),
                        key=lambda r: r.get("submitted_at") or "", reverse=True)[:10]
        return page(request, "console_overview.html", {
            "organiser": who, "phase": phase, "pending": arena.teams_table(state="pending"), "queue": queue,
            "recent": recent, "heading": "Overview"})

    @app.get(f"{PREFIX}/teams", response_class=HTMLResponse, include_in_schema=False)
    def console_teams(request: Request, q: str = Query("", max_length=64), state: str = Query("", max_length=16)):
        who = page_organiser(request)
        if state and state not in TEAM_STATES:
            state = ""
        return page(request, "console_teams.html", {
            "organiser": who, "teams": arena.teams_table(q, state), "q": q, "state": state, "states": TEAM_STATES,
            "heading": "Teams"})

    @app.post(f"{PREFIX}/teams/{{name}}/{{action}}", include_in_schema=False)
    async def console_team_action(request: Request, name: str, action: str):
        who, data = await action_form(request)
        if action not in TEAM_ACTIONS:
            raise NotFound(f"no team action {action!r}; actions are {', '.join(TEAM_ACTIONS)}.")
        await run_in_threadpool(arena.team_action, name[:64], action, who.actor, web.text_field(data, "reason", 600))
        return RedirectResponse(f"{PREFIX}/teams", status_code=303)

    @app.get(f"{PREFIX}/phases", response_class=HTMLResponse, include_in_schema=False)
    def console_phases(request: Request):
        who = page_organiser(request)
        rows = [{**arena.phase_json(ph), "number": ph.number, "closed": arena.phase_closed(ph)} for ph in arena.phases()]
        return page(request, "console_phases.html", {"organiser": who, "phases": rows, "heading": "Phases"})

    @app.post(f"{PREFIX}/phases/open", include_in_schema=False)
    async def console_open_phase(request: Request):
        who, data = await action_form(request)
        raw = web.text_field(data, "seed", 20).strip()
        if not raw.isdigit():
            raise Invalid("the seed must be a whole number (e.g. 2027); it stays secret until you reveal the phase.")
        await run_in_threadpool(arena.open_next_phase, int(raw), web.text_field(data, "name", 120).strip(), who.actor)
        return RedirectResponse(f"{PREFIX}/phases", status_code=303)

    @app.post(f"{PREFIX}/phases/close", include_in_schema=False)
    async def console_close_phase(request: Request):
        who, data = await action_form(request)
        await run_in_threadpool(arena.close_phase_now, who.actor, web.text_field(data, "reason", 600))
        return RedirectResponse(f"{PREFIX}/phases", status_code=303)

    @app.post(f"{PREFIX}/phases/{{phase_id}}/reveal", include_in_schema=False)
    async def console_reveal(request: Request, phase_id: web.DbId):
        who, _ = await action_form(request)
        await run_in_threadpool(arena.reveal_secret, phase_id, who.actor)
        return RedirectResponse(f"{PREFIX}/phases", status_code=303)

    @app.get(f"{PREFIX}/tracks/{{track_id}}/submissions", response_class=HTMLResponse, include_in_schema=False)
    def console_submissions(request: Request, track_id: str, team: str = Query("", max_length=64),
                            state: str = Query("", max_length=16)):
        who = page_organiser(request)
        track = arena.track(track_id[:32])
        states = (("queued", "running", "finished", "failed", "cancelled", "disqualified") if track.kind == "dataset"
                  else ("scored", "disqualified"))
        return page(request, "console_submissions.html", {
            "organiser": who, "track": {"id": track.id, "title": track.title, "kind": track.kind},
            "rows": track.submissions_table(team, state), "team_q": team, "state": state, "states": states,
            "heading": f"Submissions: {track.id}"})

    @app.post(f"{PREFIX}/tracks/{{track_id}}/submissions/{{sub_id}}/{{action}}", include_in_schema=False)
    async def console_submission_action(request: Request, track_id: str, sub_id: web.DbId, action: str):
        who, data = await action_form(request)
        await run_in_threadpool(arena.submission_action, track_id[:32], sub_id, action[:16], who.actor,
                                web.text_field(data, "reason", 600))
        return RedirectResponse(f"{PREFIX}/tracks/{track_id}/submissions", status_code=303)

    @app.post(f"{PREFIX}/tracks/{{track_id}}/rescore", include_in_schema=False)
    async def console_rescore_track(request: Request, track_id: str):
        who, data = await action_form(request)
        await run_in_threadpool(arena.rescore_track, track_id[:32], who.actor, web.text_field(data, "reason", 600))
        dataset = arena.track(track_id[:32]).kind == "dataset"
        return RedirectResponse(f"{PREFIX}/jobs" if dataset else f"{PREFIX}/tracks/{track_id}/submissions", status_code=303)

    @app.post(f"{PREFIX}/tracks/{{track_id}}/grant", include_in_schema=False)
    async def console_grant(request: Request, track_id: str):
        who, data = await action_form(request)
        raw = web.text_field(data, "extra", 4).strip() or "1"
        if not raw.isdigit():
            raise Invalid("extra submissions must be a whole number from 1 to 100.")
        await run_in_threadpool(arena.grant_submissions, web.text_field(data, "team", 64), track_id[:32], int(raw),
                                who.actor, web.text_field(data, "reason", 600))
        return RedirectResponse(f"{PREFIX}/tracks/{track_id}/submissions", status_code=303)

    @app.get(f"{PREFIX}/jobs", response_class=HTMLResponse, include_in_schema=False)
    def console_jobs(request: Request, state: str = Query("", max_length=16)):
        who = page_organiser(request)
        jobs = [j.as_json() for j in arena.jobs.list(state or None, limit=100)]
        return page(request, "console_jobs.html", {"organiser": who, "jobs": jobs, "state": state,
                                                   "mode": arena.jobs.mode, "heading": "Jobs"})

    @app.post(f"{PREFIX}/jobs/submit", include_in_schema=False)
    async def console_submit_job(request: Request):
        who, data = await action_form(request)
        await run_in_threadpool(arena.submit_job, web.text_field(data, "kind", 64), web.text_field(data, "payload", 8192),
                                web.text_field(data, "queue", 16), who.actor)
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)

    @app.get(f"{PREFIX}/organisers", response_class=HTMLResponse, include_in_schema=False)
    def console_organisers(request: Request):
        who = page_organiser(request)
        return page(request, "console_organisers.html", {"organiser": who, "organisers": arena.organiser_names(),
                                                          "heading": "Organisers"})

    @app.post(f"{PREFIX}/organisers", response_class=HTMLResponse, include_in_schema=False)
    async def console_create_organiser(request: Request):
        who, data = await action_form(request)
        uri = await run_in_threadpool(arena.create_organiser, web.text_field(data, "name", 64),
                                      web.text_field(data, "password", 256), bool(data.get("totp")), who.actor)
        return page(request, "console_organisers.html", {
            "organiser": who, "organisers": arena.organiser_names(), "heading": "Organisers",
            "created": web.text_field(data, "name", 64), "totp_uri": uri}, status=201)

    @app.post(f"{PREFIX}/jobs/{{job_id}}/{{action}}", include_in_schema=False)
    async def console_job_action(request: Request, job_id: web.DbId, action: str):
        who, _ = await action_form(request)
        await run_in_threadpool(arena.job_action, job_id, action[:16], who.actor)
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)

    @app.get(f"{PREFIX}/audit", response_class=HTMLResponse, include_in_schema=False)
    def console_audit(request: Request):
        who = page_organiser(request)
        return page(request, "console_audit.html", {"organiser": who, "rows": arena.audit_entries(),
                                                    "heading": "Audit log"})

    @app.get(f"{PREFIX}/export/audit.csv", include_in_schema=False)
    def console_export_audit(request: Request):
        organiser(request)
        return Response(arena.audit_csv(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="audit.csv"'})

    @app.get(f"{PREFIX}/export/results.csv", include_in_schema=False)
    def console_export_results(request: Request):
        organiser(request)
        return Response(arena.export_results(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="results.csv"'})

    # ---------------------------------------------------------------- public

    @app.get("/api/changes")
    def api_changes():
        """Every organiser action that changed a board or a phase: when, what, on what, why."""
        return JSONResponse([{k: r[k] for k in ("at", "action", "target", "reason")}
                             for r in arena.audit_entries(public_only=True)])

    @app.get("/changes", response_class=HTMLResponse, include_in_schema=False)
    def page_changes(request: Request):
        return pages.render(request, "changes.html", {"rows": arena.audit_entries(public_only=True)})
