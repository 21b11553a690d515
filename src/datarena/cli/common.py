"""What every command group shares: the root Typer app, the console, common options, lookups."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 140)
app = typer.Typer(
    help="datarena: make datasets, score them, and host data-centric ML challenges.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MNIST_DIR = typer.Option(None, "--mnist-dir", envvar="DATARENA_MNIST_DIR", help="Directory of the four MNIST IDX files (default: embedded 5k digits).")
CIFAR_DIR = typer.Option(None, "--cifar-dir", envvar="DATARENA_CIFAR10_DIR", help="Directory of the CIFAR-10 python batches (needed by 888).")
FACES_DIR = typer.Option(None, "--faces-dir", envvar="DATARENA_FACES_DIR", help="Face images + list_attr_celeba.txt (default: embedded lfw_subset).")
CHALLENGE = typer.Option(None, "--challenge", help="Challenge YAML file (default: hackathon42 on the embedded MNIST).")
DATA_DIR = typer.Option(None, "--data-dir", help="Where phase datasets and the SQLite database live.")


def _device(name: str) -> str:
    """'auto' -> cuda when torch sees a GPU, else cpu (resolved when a command runs, so that
    `datarena --help` does not import torch)."""
    if name != "auto":
        return name
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sources(mnist_dir, cifar_dir, faces_dir):
    from datarena.underspec.exercises import SourceConfig

    return SourceConfig(
        mnist_dir=str(mnist_dir) if mnist_dir else None,
        cifar_dir=str(cifar_dir) if cifar_dir else None,
        faces_dir=str(faces_dir) if faces_dir else None,
    )


def _arena(challenge, data_dir, start: bool = False):
    """The challenge's Arena; start=True also opens the first phase (generating its data) if none exists.

    Organiser commands only migrate the schema: listing teams must not generate datasets.
    """
    from datarena.challenge.arena import Arena
    from datarena.challenge.spec import load_challenge
    from datarena.challenge.store import migrate

    arena = Arena(load_challenge(challenge, data_dir=str(data_dir) if data_dir else None))
    if start:
        arena.start()
    else:
        migrate(arena.engine)
    return arena
