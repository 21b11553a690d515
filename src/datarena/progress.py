"""One progress bar for all long work (rich): items done, rate, elapsed, and live stats."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str = "items", enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **stats)`; stats (e.g. loss=0.3) are shown beside the rate."""
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        task = bar.add_task(description, total=total, rate="", stats="")

        def advance(n: int = 1, **stats: float | str) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
            bar.update(task, rate=f"{speed:.1f} {unit}/s" if speed else "", **({"stats": text} if stats else {}))

        yield advance
