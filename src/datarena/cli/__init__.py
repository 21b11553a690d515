"""The `datarena` command: one module per command group; each command parses, calls one
function and prints. Importing this package imports no torch (`datarena --help` stays quick)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from datarena.cli import (  # noqa: F401 - registers commands
    admin,
    diffuse,
    evaluate,
    generate,
    organisers,
    participant,
    scenes,
    serving,
)
from datarena.cli.common import app, console
from datarena.errors import DatarenaError

__all__ = ["app", "main"]


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Working directory of the demo."),
    seed: int = typer.Option(42, help="Suite seed."),
    linger: float = typer.Option(0.0, help="Keep serving the leaderboard this many seconds at the end."),
    secret: str = typer.Option(None, "--secret", help="Server secret phrase (its SHA-256 becomes the secret): "
                               "another phrase serves other data from the same suite. Default: the published "
                               "demo secret."),
    dataset_round: bool = typer.Option(True, "--dataset-round/--no-dataset-round",
                                       help="Run the dataset track's round after the labels round."),
) -> None:
    """End to end: generate the suite, serve it, solve every exercise over HTTP, show the leaderboard."""
    from datarena.demo import run_demo

    run_demo(out, seed=seed, console=console, linger=linger, secret=secret, dataset_round_too=dataset_round)


def main() -> None:
    try:
        app()
    except DatarenaError as err:
        Console(stderr=True, width=None if sys.stderr.isatty() else 140).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
