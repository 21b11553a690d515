"""`datarena admin`: organiser commands on a challenge's database and its job queue."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.common import (
    CHALLENGE,
    DATA_DIR,
    _arena,
    app,
    console,
)

admin_app = typer.Typer(help="Organiser commands on a challenge's database.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("validate-team")
def admin_validate(name: str, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR,
                   revoke: bool = typer.Option(False, "--revoke", help="Withdraw the validation.")) -> None:
    """Validate a registered team so it can reveal and submit."""
    team = _arena(challenge, data_dir).validate_team(name, not revoke)
    console.print(f"team {team.name}: validated={team.validated}")


@admin_app.command("revoke-tokens")
def admin_revoke_tokens(name: str, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """End every token and web session of a team now (its members log in again)."""
    n = _arena(challenge, data_dir).revoke_team_tokens(name)
    console.print(f"team {name}: {n} token(s) and session(s) revoked")


@admin_app.command("list-teams")
def admin_list(challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """List teams, their validation and submission counts."""
    table = Table("team", "state", "registered", "submissions")
    for t in _arena(challenge, data_dir).list_teams():
        table.add_row(t["name"], t["state"], t["created_at"], str(t["submissions"]))
    console.print(table)


@admin_app.command("export-results")
def admin_export(out: Path = typer.Option(None, "--out", help="CSV file (default: stdout)."),
                 challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """CSV of every submission and its score, all phases."""
    text = _arena(challenge, data_dir).export_results()
    if out:
        out.write_text(text)
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


@admin_app.command("new-phase")
def admin_new_phase(seed: int = typer.Option(..., "--seed", help="Seed of the regenerated exercises."),
                    name: str = typer.Option(None, "--name", help="Phase name (default: phase N)."),
                    challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Regenerate every exercise with a new seed and open a new phase (old results are kept)."""
    arena = _arena(challenge, data_dir)
    phase = arena.open_next_phase(seed, name, "cli", progress=True)
    console.print(f"opened {phase.name}; commitment {phase.commitment}; data in {phase.data_dir}")


@admin_app.command("reveal-seed")
def admin_reveal_seed(phase: int = typer.Argument(..., help="Phase id (see GET /api/phases)."),
                      challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Publish a closed phase's secret (API, page, export) so anyone can verify its data."""
    p = _arena(challenge, data_dir).reveal_secret(phase, "cli")
    console.print(f"{p.name}: secret {p.revealed_secret} (commitment {p.commitment}) is now public.\n"
                  f"Anyone can check the phase: datarena verify-phase SERVER_URL --phase {p.id}")




@admin_app.command("verify")
def admin_verify(submission: int = typer.Argument(..., help="Dataset submission id (track page, export-results)."),
                 challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Reproduce a dataset submission: re-train (and regenerate a datarena-made dataset) as a job, then compare."""
    job = _arena(challenge, data_dir).verify_submission(submission)
    console.print(f"queued verification job {job.id} for submission {submission}; the server's worker runs it "
                  f"(`datarena admin jobs show {job.id}`); the result shows on the track's leaderboard.")


jobs_app = typer.Typer(help="Organiser commands on the job queue (scoring, verification, generation).", no_args_is_help=True)
admin_app.add_typer(jobs_app, name="jobs")


def _job_row(j) -> list[str]:
    p = j.as_json()
    prog = p["progress"]
    step = f"{prog['step']}/{prog['total']}" if prog["total"] else (str(prog["step"]) if prog["step"] is not None else "-")
    rate = f"{prog['rate']:.1f}/s" if prog["rate"] else ""
    eta = f"{prog['eta_s']:.0f}s" if prog["eta_s"] else ""
    colour = {"finished": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(j.state, "white")
    return [str(j.id), j.kind, j.queue, f"[{colour}]{j.state}[/]", f"{j.attempts}/{j.max_attempts}", j.owner or "",
            step, rate, eta, (j.error or prog["message"] or "")[:60]]


@jobs_app.command("list")
def jobs_list(state: str = typer.Option(None, "--state", help="Only jobs in this state."),
              limit: int = typer.Option(50, "--limit"), challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """The latest jobs with state, attempts, progress, rate and ETA."""
    q = _arena(challenge, data_dir).jobs
    table = Table("id", "kind", "queue", "state", "attempts", "owner", "step", "rate", "eta", "message / reason",
                  title=f"jobs ({q.mode} mode)")
    for j in q.list(state, limit):
        table.add_row(*_job_row(j))
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Everything about one job: payload, lease holder, progress, log tail, result or failure reason."""
    import json

    console.print_json(json.dumps(_arena(challenge, data_dir).jobs.get(job_id).as_json()))


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Cancel a job: a queued one never runs, a running one stops at its next heartbeat."""
    j = _arena(challenge, data_dir).job_action(job_id, "cancel", "cli")
    console.print(f"job {j['job']}: {j['state']}{' (stopping at its next heartbeat)' if j['state'] == 'running' else ''}")


@jobs_app.command("retry")
def jobs_retry(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Queue a failed or cancelled job again (attempts start from zero)."""
    j = _arena(challenge, data_dir).job_action(job_id, "retry", "cli")
    console.print(f"job {j['job']}: {j['state']}")


@jobs_app.command("submit")
def jobs_submit(kind: str = typer.Argument(..., help="score_dataset, render_scenes, diffuse_shard, sleep, noop."),
                payload: str = typer.Option("{}", "--payload", help="The job's payload as JSON."),
                queue: str = typer.Option(None, "--queue", help="cpu or gpu (default: the kind's)."),
                challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Queue an organiser job, e.g. a shard of a dataset to render."""
    j = _arena(challenge, data_dir).submit_job(kind, payload, queue, "cli")
    console.print(f"queued job {j.id} ({j.kind} on {j.queue}); follow it with `datarena admin jobs show {j.id}`")
