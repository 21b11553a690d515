"""The `jobs` table (created by the server's Alembic revision 0003)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from datarena import errors
from datarena.db import utcnow

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
DONE = (FINISHED, FAILED, CANCELLED)


class JobBase(DeclarativeBase):
    pass


class Job(JobBase):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)  # e.g. "submission:12"
    team_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    time_limit_s: Mapped[float] = mapped_column(Float, nullable=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)  # lease holder of this attempt
    last_worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    progress_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(String(200), nullable=True)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)  # e.g. images/s
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    def as_json(self, private: bool = True) -> dict:
        """The job as the API shows it; private=False leaves out the payload and worker names."""
        out = {
            "id": self.id, "kind": self.kind, "queue": self.queue, "state": self.state, "owner": self.owner,
            "attempts": self.attempts, "max_attempts": self.max_attempts,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "progress": {"step": self.progress_step, "total": self.progress_total,
                         "message": self.progress_message, "rate": self.rate, "eta_s": self.eta_s},
            "result": json.loads(self.result) if self.result else None,
            "error": self.error,
        }
        if private:  # the log tail may name server paths and hosts: organisers only
            out.update(payload=json.loads(self.payload), worker=self.worker, last_worker=self.last_worker,
                       log_tail=self.log_tail,
                       lease_expires_at=_iso(self.lease_expires_at), heartbeat_at=_iso(self.heartbeat_at),
                       time_limit_s=self.time_limit_s)
        return out


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") + "Z" if t else None


# Failures that are the platform's doing, not the input's: a submission whose job ended so gives its
# slot back. A job function that rejects its input raises a `datarena.errors` error, recorded as
# "<ClassName>: message"; anything else (worker lost, time limit, broker or storage errors,
# cancellation by an organiser) is the platform's.
PLATFORM_PREFIXES = ("worker lost", "exceeded the time limit", "unknown job kind", "cancelled")


def platform_fault(state: str, error: str | None) -> str | None:
    """Why a finished job's failure is the platform's (its submission's slot comes back), or None."""
    if state == CANCELLED:
        return error or "cancelled by an organiser"
    if state != FAILED:
        return None
    error = error or "failed without a reason"
    if error.startswith(PLATFORM_PREFIXES):
        return error
    kind = error.split(":", 1)[0].strip()
    rejected = isinstance(getattr(errors, kind, None), type) and issubclass(getattr(errors, kind), errors.DatarenaError)
    return None if rejected else error
