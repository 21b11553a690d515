"""Seeded runs that leave the caller's random state alone.

The project's rule: a result depends on its own seed only, and computing it does not move the
global RNG. Code that must draw from torch's global generator (initialisation of modules,
dropout) does so inside `seeded(seed)`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global CPU generator seeded with `seed` inside; its state restored on exit."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seeded_by(seed_of: Callable[[inspect.BoundArguments], int]):
    """Decorator: run the function inside `seeded(seed_of(bound arguments))`."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            with seeded(seed_of(bound)):
                return fn(*args, **kwargs)

        return run

    return wrap
