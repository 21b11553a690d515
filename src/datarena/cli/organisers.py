"""`datarena admin` commands of organiser accounts, team decisions and the audit log; each is the
twin of a console action (`datarena.challenge.organisers`), recorded with actor "cli"."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.admin import admin_app
from datarena.cli.common import CHALLENGE, DATA_DIR, _arena, console
from datarena.errors import DatarenaError


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("again", hide_input=True) != first:
        raise DatarenaError("the two passwords differ; run the command again.")
    return first


@admin_app.command("create-organiser")
def create_organiser(name: str,
                     totp: bool = typer.Option(False, "--totp", help="Add a second factor; prints its provisioning URI."),
                     password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
                     challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """An organiser account for the console (/organiser), apart from teams (argon2id password)."""
    uri = _arena(challenge, data_dir).create_organiser(name, _password(password_stdin), totp=totp)
    console.print(f"organiser {name} created; log in at /organiser/login")
    if uri:
        console.print("add this to an authenticator app (TOTP, 30 s):")
        print(uri)


def _team(action: str):
    def command(name: str, reason: str = typer.Option("", "--reason", help="Why (refuse: the team sees it; disable: public)."),
                challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
        out = _arena(challenge, data_dir).team_action(name, action, "cli", reason)
        console.print(f"team {out['name']}: {out['state']}")

    command.__doc__ = {"refuse": "Refuse a registered team (it sees the reason); validate-team takes it back.",
                       "disable": "Disable a team: no login, reveal or submission, off the boards (public, with a reason).",
                       "enable": "Enable a disabled team again."}[action]
    return command


for _action in ("refuse", "disable", "enable"):
    admin_app.command(f"{_action}-team")(_team(_action))


@admin_app.command("audit")
def audit(public: bool = typer.Option(False, "--public", help="Only the actions listed on /changes."),
          csv_out: Path = typer.Option(None, "--csv", help="Write the whole log as CSV here."),
          challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """The organisers' audit log, newest first: who, what, on what, why, when."""
    arena = _arena(challenge, data_dir)
    if csv_out:
        csv_out.write_text(arena.audit_csv())
        console.print(f"wrote {csv_out}")
        return
    table = Table("#", "when (UTC)", "who", "action", "target", "reason", "public")
    for r in arena.audit_entries(public_only=public):
        table.add_row(str(r["id"]), r["at"], r["actor"], r["action"], r["target"], r["reason"], "yes" if r["public"] else "")
    console.print(table)


@admin_app.command("close-phase")
def close_phase(reason: str = typer.Option("", "--reason", help="Shown on /changes."),
                challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """End the current phase now (no more reveals or submissions; final boards show)."""
    phase = _arena(challenge, data_dir).close_phase_now("cli", reason)
    console.print(f"{phase.name} closed at {phase.ends_at:%Y-%m-%d %H:%M:%S} UTC")


def _submission(action: str):
    def command(track: str = typer.Argument(..., help="Dataset track id."),
                submission: int = typer.Argument(..., help="Submission id (the track page, export-results)."),
                reason: str = typer.Option("", "--reason", help="Public reason (required to disqualify)."),
                challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
        out = _arena(challenge, data_dir).submission_action(track, submission, action, "cli", reason)
        console.print(f"submission {submission} on {track}: {action} done {out}")

    command.__doc__ = {"disqualify": "Disqualify a dataset submission; the board shows the reason.",
                       "restore": "Restore a disqualified dataset submission.",
                       "rescore": "Score a dataset submission again as a new job."}[action]
    return command


for _action in ("disqualify", "restore", "rescore"):
    admin_app.command(_action)(_submission(_action))


@admin_app.command("rescore-track")
def rescore_track(track: str, reason: str = typer.Option("", "--reason", help="Shown on /changes."),
                  challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Score every submission of the current phase on a dataset track again, as jobs."""
    pairs = _arena(challenge, data_dir).rescore_track(track, "cli", reason)
    console.print(f"{len(pairs)} scoring job(s) queued: " + ", ".join(f"submission {s} -> job {j}" for s, j in pairs))


@admin_app.command("grant")
def grant(team: str, track: str, extra: int = typer.Option(1, "--extra", help="How many more submissions."),
          reason: str = typer.Option(..., "--reason", help="Why (audited)."),
          challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Give a team extra dataset submissions on a track in the current phase."""
    n = _arena(challenge, data_dir).grant_submissions(team, track, extra, "cli", reason)
    console.print(f"team {team} may now make {n} submission(s) on {track} in this phase")
