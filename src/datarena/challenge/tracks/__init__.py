"""Tracks: one domain module per kind of challenge track (no web imports).

A track owns its data, submissions, scoring and leaderboard. The Arena builds one object per
entry of the challenge's `tracks:` list and asks each to prepare a new phase, rank teams and
export results; its HTTP routes are `http/routes/<kind>.py`. Adding a kind of track is one
module here (`<kind>.py`, its class as `TRACK`), one routes module (`http/routes/<kind>.py`,
`mount`) and its spec in the `TrackSpec` union (`challenge/spec.py`); nothing else names kinds.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from datarena.errors import ConfigError

if TYPE_CHECKING:
    from datarena.challenge.models import Phase

def kinds() -> tuple[str, ...]:
    """The track kinds: the `kind` literals of the `TrackSpec` union (`challenge/spec.py`)."""
    import typing

    from datarena.challenge.spec import TrackSpec

    union = typing.get_args(TrackSpec)[0]
    return tuple(typing.get_args(spec.model_fields["kind"].annotation)[0] for spec in typing.get_args(union))


class Track(ABC):
    """What the Arena needs of every track."""

    kind = ""

    def __init__(self, arena, spec):
        self.arena = arena
        self.spec = spec
        self.id = spec.id

    @property
    def title(self) -> str:
        return self.spec.title or self.id

    def url(self) -> str:
        return f"/tracks/{self.id}"

    def prepare_phase(self, out_dir, generation_seed: int, commitment: str, progress: bool) -> None:  # noqa: B027
        """Make what a new phase needs (its data), before the phase row exists; nothing by default."""

    def on_start(self, phase: Phase, progress: bool) -> None:  # noqa: B027
        """Check or make what the track needs each time the server starts (e.g. a test set); nothing by default."""

    @abstractmethod
    def leaderboard(self, phase_id: int | None = None) -> dict:
        """The track's ranking of validated teams in a phase (the current one by default)."""

    def export_rows(self) -> list[dict]:
        return []

    # what organisers do to a track's submissions (challenge.organisers calls these)
    @abstractmethod
    def set_disqualified(self, db, sub_id: int, reason: str | None):
        """Mark a submission disqualified with a public reason (None: restore); inside `db`'s transaction."""

    @abstractmethod
    def rescore(self, sub_ids: list[int] | None = None) -> list[tuple[int, object]]:
        """Score the given submissions (or the current phase's) again; (submission, job id or score) pairs."""

    @abstractmethod
    def submissions_table(self, team: str = "", state: str = "") -> list[dict]:
        """The console's list: id, team, created_at, shown_state, disqualified, ... newest first."""

    def submission_counts(self) -> dict[int, int]:
        return {}


def track_class(kind: str) -> type[Track]:
    """The `Track` subclass of a kind: `TRACK` in the module `challenge/tracks/<kind>.py`."""
    if kind not in kinds():
        raise ConfigError(f"unknown track kind {kind!r}; choose one of {', '.join(kinds())}.")
    return importlib.import_module(f"{__name__}.{kind}").TRACK


def rank_rows(rows: list[dict], key) -> list[dict]:
    """Sort best first and number them 1..n (ties share nothing: team name breaks them)."""
    rows.sort(key=key)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


__all__ = ["Track", "kinds", "rank_rows", "track_class"]
