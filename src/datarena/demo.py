"""The main job on the embedded default data (`make demo`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_demo(out: Path, seed: int = 42, console: Console | None = None) -> None:
    from datarena.cli import print_generation
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    console = console or Console()
    suite_dir = out / "suite"
    console.rule(f"1. generating the hackathon42 suite (seed {seed}) into {suite_dir}")
    results = generate_suite(load_suite(), seed, suite_dir, force=True)
    print_generation(results, suite_dir)
