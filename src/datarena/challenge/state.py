"""What every part of a challenge shares, declared in one place: the `Arena` provides these
attributes and the parts (teams, phases, organiser actions) rely on nothing else of each other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from datarena.challenge.auth import LoginLimiter, Passwords
    from datarena.challenge.models import Phase
    from datarena.challenge.notify import Mailer
    from datarena.challenge.spec import ChallengeSpec
    from datarena.challenge.teams import TeamRef
    from datarena.challenge.tracks import Track
    from datarena.jobs.queue import JobQueue


class ChallengeState:
    spec: ChallengeSpec
    url: str
    engine: Engine
    Session: sessionmaker[Session]
    passwords: Passwords
    limiter: LoginLimiter
    jobs: JobQueue
    tracks: dict[str, Track]
    mailer: Mailer
    labels: Track  # the exercise-suite track (Arena's property)
    # read caches of committed, immutable facts (the database stays the judge of every write)
    _tokens: dict[str, tuple[TeamRef, float]]
    _phase: tuple[Phase, float] | None
    _cache_lock: threading.Lock

    # methods one part provides and another calls (declared, not defined: the providers define them)
    track: Callable[[str], Track]  # Arena
    retrying: Callable[[Callable[[Session], Any]], Any]  # Arena
    team_action: Callable[..., dict]  # OrganisersMixin
    require_validated: Callable[[TeamRef], None]  # TeamsMixin
    current_phase: Callable[..., Phase]  # PhasesMixin
    open_phase: Callable[..., Phase]  # PhasesMixin
    reveal_phase_secret: Callable[[int], Phase]  # PhasesMixin
