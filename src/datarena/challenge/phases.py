"""Phases: secret generation seeds with a public commitment, revealed after a phase closes.

A served phase's data must not be reproducible by participants, yet anyone must be able to
check afterwards that the organisers did not change them. So:

* the server keeps a random 32-byte secret (`server-secret` beside the database, mode 0600,
  created once and kept across restarts, never served);
* phase N with the organiser's phase seed S gets `phase_secret = HMAC-SHA256(server secret,
  "datarena phase N seed S")` (64 hex digits); its exercises are generated with the integer
  of those digits as seed;
* everything served shows only `commitment = sha256(phase_secret bytes)`;
* after the phase closes, `datarena admin reveal-seed N` publishes the phase secret, and
  `datarena verify-phase URL --phase N` regenerates the phase, checks the commitment, the
  public files and the hidden labels. Revealing one phase says nothing of the others.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from datarena.challenge.models import Phase
from datarena.challenge.state import ChallengeState
from datarena.commitments import (
    SECRET_BYTES,
    commitment,
    generation_seed,
    phase_secret,
)
from datarena.db import utcnow
from datarena.errors import Busy, ConfigError, DatarenaError, Forbidden, NotFound

SECRET_FILE = "server-secret"
PHASE_CACHE_S = 1.0  # a phase opened by another process is seen within this delay


def load_or_create_server_secret(path: str | os.PathLike) -> bytes:
    """The server's secret, created (owner-only permissions) on first use."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
    text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise ConfigError(f"{path} must hold {SECRET_BYTES * 2} hex digits (the server secret); "
                          f"restore it from a backup, or delete it before the first phase is opened.")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return raw


class PhasesMixin(ChallengeState):
    """Phase operations of the Arena: open (asking each track for its data), look up, close, reveal."""

    def phase_data_dir(self, number: int) -> Path:
        return Path(self.spec.data_dir) / f"phase-{number}"

    def server_secret(self) -> bytes:
        return load_or_create_server_secret(self.spec.resolved_secret_file())

    def start(self, progress: bool = True) -> Phase:
        """Migrate the schema and open the first phase (generating its data) if none exists."""
        from datarena.challenge.store import migrate

        migrate(self.engine)
        with self.Session() as s:
            phase = self._latest_phase(s)
        if phase is None:
            first = self.spec.phases[0]
            phase = self.open_phase(first.seed, first.name, first.start, first.end, progress=progress)
        for track in self.tracks.values():
            track.on_start(phase, progress)
        return phase

    def secret_of(self, phase: Phase) -> str:
        return phase_secret(self.server_secret(), phase.number or phase.id, phase.seed)

    def open_phase(self, seed: int, name: str | None = None, start: datetime | None = None,
                   end: datetime | None = None, progress: bool = True) -> Phase:
        """Generate every track's data from the phase's secret and open a new phase (earlier ones are kept).

        The data come from HMAC(server secret, phase number and `seed`); only the commitment
        to that secret is served until the phase closes and an organiser reveals it.
        """
        with self.Session() as s:
            number = (s.scalar(select(func.count(Phase.id))) or 0) + 1
        secret = phase_secret(self.server_secret(), number, seed)
        out = self.phase_data_dir(number)
        for track in self.tracks.values():
            track.prepare_phase(out, generation_seed(secret), commitment(secret), progress)
        phase = Phase(name=name or f"phase {number}", seed=seed, data_dir=str(out.resolve()),
                      starts_at=start, ends_at=end, number=number, commitment=commitment(secret))
        with self.Session() as s:
            s.add(phase)
            s.commit()
        self._phase = None
        return phase

    @staticmethod
    def _latest_phase(s: Session) -> Phase | None:
        return s.scalars(select(Phase).order_by(Phase.id.desc()).limit(1)).first()

    def current_phase(self, s: Session | None = None) -> Phase:
        cached = self._phase
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        if s is None:
            with self.Session() as s2:
                phase = self._latest_phase(s2)
        else:
            phase = self._latest_phase(s)
        if phase is None:
            raise Busy("the challenge has no open phase yet; an organiser must start it.")
        self._phase = (phase, time.monotonic() + PHASE_CACHE_S)
        return phase

    def phases(self) -> list[Phase]:
        with self.Session() as s:
            return list(s.scalars(select(Phase).order_by(Phase.id)))

    def phase_by_id(self, s: Session, phase_id: int | None) -> Phase:
        if phase_id is None:
            return self.current_phase(s)
        phase = s.get(Phase, phase_id)
        if phase is None:
            raise NotFound(f"no phase {phase_id}; phases are {[p.id for p in self.phases()]}.")
        return phase

    @staticmethod
    def require_open(phase: Phase) -> None:
        now = utcnow()
        if phase.starts_at and now < phase.starts_at:
            raise Forbidden(f"{phase.name} opens at {phase.starts_at:%Y-%m-%d %H:%M} UTC.")
        if phase.ends_at and now > phase.ends_at:
            raise Forbidden(f"{phase.name} closed at {phase.ends_at:%Y-%m-%d %H:%M} UTC.")

    def phase_open_to(self, team) -> Phase:
        """The current phase, for a validated team, while it is open (403 otherwise)."""
        self.require_validated(team)
        phase = self.current_phase()
        self.require_open(phase)
        return phase

    def phase_closed(self, phase: Phase) -> bool:
        """Closed: its end date has passed, or a later phase has been opened."""
        if phase.ends_at and utcnow() > phase.ends_at:
            return True
        with self.Session() as s:
            return bool(s.scalar(select(func.count(Phase.id)).where(Phase.id > phase.id)))

    def reveal_phase_secret(self, phase_id: int) -> Phase:
        """Publish a closed phase's secret (idempotent); refuse an open phase."""
        with self.Session() as s:
            phase = s.get(Phase, phase_id)
            if phase is None:
                raise DatarenaError(f"no phase {phase_id}; phases are {[p.id for p in self.phases()]}.")
            if phase.commitment is None or phase.number is None:
                raise DatarenaError(f"{phase.name} was generated from a public seed (before secret seeds); "
                                    f"there is no secret to reveal.")
            if phase.revealed_secret:
                return phase
            if not self.phase_closed(phase):
                until = f"it ends at {phase.ends_at:%Y-%m-%d %H:%M} UTC" if phase.ends_at else "it has no end date"
                raise DatarenaError(f"{phase.name} is still open ({until}); revealing its secret now would "
                                    f"give away every hidden label. Reveal it after it closes, or open the "
                                    f"next phase first (`datarena admin new-phase --seed S`).")
            secret = self.secret_of(phase)
            if commitment(secret) != phase.commitment:
                raise DatarenaError(f"the server secret at {self.spec.resolved_secret_file()} does not match "
                                    f"{phase.name}'s commitment; restore the secret file the phase was opened with.")
            phase.revealed_secret = secret
            phase.revealed_at = utcnow()
            s.commit()
        self._phase = None
        return phase

    def phase_json(self, phase: Phase) -> dict:
        """What anyone may see of a phase: never the seed, the secret only once revealed."""
        out = {"id": phase.id, "name": phase.name, "commitment": phase.commitment,
               "starts_at": phase.starts_at.isoformat() if phase.starts_at else None,
               "ends_at": phase.ends_at.isoformat() if phase.ends_at else None,
               "secret": phase.revealed_secret}
        if phase.revealed_secret:
            out["verify"] = f"datarena verify-phase SERVER_URL --phase {phase.id}"
        return out

    def verification(self, phase_id: int) -> dict:
        """For a revealed phase: the suite file and every file hash needed to check it."""
        with self.Session() as s:
            phase = self.phase_by_id(s, phase_id)
        if not phase.revealed_secret:
            raise Forbidden(f"{phase.name}'s secret is not revealed yet; it is published after the phase closes.")
        return {**self.phase_json(phase), **self.labels.verification(phase)}
