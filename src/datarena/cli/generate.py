"""`datarena generate`: the underspecified exercise suite, or one exercise."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.common import (
    CIFAR_DIR,
    FACES_DIR,
    MNIST_DIR,
    _sources,
    app,
    console,
)
from datarena.errors import DatarenaError

generate_app = typer.Typer(help="Generate underspecified exercises (a whole suite or one).", no_args_is_help=True)
app.add_typer(generate_app, name="generate")


def print_generation(results, out: Path) -> None:
    table = Table(title=f"exercises in {out}")
    for col in ("id", "name", "row shape", "labeled", "unlabeled", "target", "mix", "pts", "default", "status"):
        table.add_column(col, overflow="fold")
    for r in results:
        s = r.spec
        shapes = r.shapes or {}
        count = lambda k, sh=shapes: str(sh[k][0]) if k in sh else "-"  # noqa: E731
        row_shape = "×".join(map(str, shapes["labeled"][1:])) if shapes else "-"
        status = f"ok {r.seconds:.1f}s" if r.status == "ok" else f"[yellow]skipped[/]: {r.reason}"
        table.add_row(s.id, s.name, row_shape, count("labeled"), count("unlabeled"), count("target"), f"{s.mix_rate:g}", f"{s.points:g}", f"{s.default_score:g}", status)
    console.print(table)


@generate_app.command("suite")
def generate_suite_cmd(
    out: Path = typer.Option(..., "--out", help="Output directory (public/ and private/ are written inside)."),
    seed: int = typer.Option(42, help="Master seed; a new seed regenerates every exercise (phase 2)."),
    suite: Path = typer.Option(None, "--suite", help="Suite YAML file (default: the hackathon42 suite)."),
    mix_rate: float = typer.Option(None, "--mix-rate", help="Override every exercise's mix rate."),
    only: list[str] = typer.Option(None, "--only", help="Generate only these exercise ids (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    secret: str = typer.Option(None, "--secret", help="A served phase's revealed secret (64 hex digits) instead of --seed."),
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Generate the whole exercise suite from a seed (or a revealed phase secret)."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    extra = None
    if secret:
        from datarena.challenge import phases

        seed, extra = phases.generation_seed(secret), {"commitment": phases.commitment(secret)}
    results = generate_suite(load_suite(suite), seed, out, _sources(mnist_dir, cifar_dir, faces_dir), force=force,
                             only=only, mix_rate=mix_rate, public_extra=extra)
    print_generation(results, out)


@generate_app.command("exercise")
def generate_exercise_cmd(
    exercise_id: str = typer.Argument(..., help="Exercise id, e.g. 01 or 456."),
    out: Path = typer.Option(Path("datarena-exercise"), "--out", help="Output directory."),
    seed: int = typer.Option(42, help="Seed (same seed as a suite gives the same arrays)."),
    mix_rate: float = typer.Option(None, "--mix-rate", help="Fraction of conflicting rows in the unlabeled set."),
    suite: Path = typer.Option(None, "--suite", help="Suite YAML file (default: the hackathon42 suite)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Generate one exercise."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    results = generate_suite(load_suite(suite), seed, out, _sources(mnist_dir, cifar_dir, faces_dir), force=force, only=[exercise_id], mix_rate=mix_rate)
    if results[0].status != "ok":
        raise DatarenaError(f"exercise {exercise_id} skipped: {results[0].reason}")
    print_generation(results, out)
