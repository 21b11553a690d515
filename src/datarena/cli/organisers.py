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
