"""The Arena: one challenge's state, composed by concept.

* teams and auth: `challenge/teams.py` (TeamsMixin);
* phases, secret seeds, commitments: `challenge/phases.py` (PhasesMixin);
* tracks: `challenge/tracks/labels.py` (the hackathon42 suite), `challenge/tracks/dataset.py`
  (uploaded datasets scored by training), one object per entry of the challenge's `tracks:`;
* organisers: accounts, team actions, the results export, verification, the audit log:
  `challenge/organisers.py`;
* long work: `datarena.jobs` (self.jobs).

What the parts share (Session, spec, tracks, jobs, ...) is declared once, in `state.ChallengeState`.

HTTP routes (`datarena.http`) and the admin CLI call these.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.exc import IntegrityError, OperationalError

from datarena.challenge.auth import LoginLimiter, Passwords
from datarena.challenge.models import Phase
from datarena.challenge.notify import Mailer
from datarena.challenge.organisers import OrganisersMixin
from datarena.challenge.phases import PhasesMixin
from datarena.challenge.spec import ChallengeSpec
from datarena.challenge.store import make_engine, session_factory
from datarena.challenge.teams import TeamRef, TeamsMixin
from datarena.challenge.tracks import Track, track_class
from datarena.errors import Busy, NotFound
from datarena.jobs.queue import JobQueue

WRITE_RETRIES = 20

__all__ = ["Arena", "TeamRef"]


class Arena(TeamsMixin, PhasesMixin, OrganisersMixin):
    def __init__(self, spec: ChallengeSpec):
        self.spec = spec
        self.url = spec.resolved_database_url()
        self.engine = make_engine(self.url)
        self.Session = session_factory(self.engine)
        self.passwords = Passwords(spec.argon2_time_cost, spec.argon2_memory_kib)
        self.limiter = LoginLimiter(spec.login_failures_allowed, spec.login_failure_window_s)
        self.jobs = JobQueue(self.engine, spec.jobs)  # started by the serving process only
        # Read caches of committed, immutable facts only: the database stays the judge of every write.
        self._tokens: dict[str, tuple[TeamRef, float]] = {}
        self._phase: tuple[Phase, float] | None = None
        self._cache_lock = threading.Lock()
        self._totp_used: dict[int, int] = {}  # organiser id -> the last TOTP time step that opened a session
        self._totp_lock = threading.Lock()
        self.mailer = Mailer(spec.notifications)  # sends nothing unless the challenge file configures smtp
        self.tracks: dict[str, Track] = {t.id: track_class(t.kind)(self, t) for t in spec.tracks}

    @property
    def labels(self) -> Track:
        """The exercise-suite track (the first labels track; challenges without `tracks:` have one)."""
        for t in self.tracks.values():
            if t.kind == "labels":
                return t
        raise NotFound("this challenge has no labels track (exercises); see /api/tracks.")

    def track_links(self) -> list[dict]:
        return [{"id": t.id, "title": t.title, "url": t.url(), "kind": t.kind} for t in self.tracks.values()]

    def track(self, track_id: str) -> Track:
        if track_id not in self.tracks:
            raise NotFound(f"no track {track_id!r}; tracks are {', '.join(self.tracks)}.")
        return self.tracks[track_id]

    def retrying(self, attempt):
        """Run a write transaction, retrying when a concurrent writer took the same slot."""
        for i in range(WRITE_RETRIES):
            with self.Session() as s:
                try:
                    return attempt(s)
                except (IntegrityError, OperationalError):
                    s.rollback()
                    time.sleep(0.002 * (i + 1))
        raise Busy("the server is busy; retry the request.")
