"""Every state change of a job is one guarded UPDATE.

The guard names the state the change starts from and, for a running job, the lease holder of
this attempt (`worker`, unique per claim). So a late, duplicate or retried delivery finds the
guard false and changes nothing; a worker that lost its lease (re-queued, cancelled) cannot
overwrite the newer state; and whatever line a worker dies on, the row is either `queued`
(not claimed), `running` with a lease that will expire (then `reap` re-queues or fails it), or
done. No job can stay `running` forever.

    queued --claim--> running --finish--> finished
       ^                 |  \\--fail----> failed --retry--> queued
       |                 |   \\--cancel--> cancelled
       +--lease expired--+ (attempts < max; else failed "worker lost N times")
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update

from datarena.db import session_factory, utcnow
from datarena.errors import DatarenaError
from datarena.jobs.models import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, Job

LOG_TAIL_LINES = 40


class JobError(DatarenaError):
    """A job operation was refused (unknown job, wrong state, quota)."""


@dataclass(frozen=True)
class Claim:
    """What a worker holds while it runs a job."""

    job_id: int
    worker: str
    kind: str
    payload: dict
    time_limit_s: float
    attempt: int


def worker_name(tag: str = "") -> str:
    import os
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}{(':' + tag) if tag else ''}:{uuid.uuid4().hex[:8]}"


class JobStore:
    def __init__(self, engine: Engine, lease_s: float = 30.0):
        self.engine = engine
        self.Session = session_factory(engine)
        self.lease_s = lease_s

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    def _update(self, job_id: int, guard, **values) -> bool:
        """One guarded UPDATE; True when it changed the row."""
        with self.engine.begin() as conn:
            res = conn.execute(update(Job).where(Job.id == job_id, *guard).values(**values))
            return res.rowcount == 1

    # ---------------------------------------------------------------- create and read

    def create(self, kind: str, queue: str, payload: dict, time_limit_s: float, max_attempts: int = 3,
               owner: str | None = None, team_id: int | None = None, max_active_per_team: int | None = None) -> Job:
        with self.Session() as s:
            if team_id is not None and max_active_per_team is not None:
                active = s.scalar(select(func.count(Job.id)).where(Job.team_id == team_id, Job.state.in_(ACTIVE)))
                if active >= max_active_per_team:
                    raise JobError(f"team already has {active} job(s) queued or running (at most "
                                   f"{max_active_per_team}); wait for one to finish.")
            job = Job(kind=kind, queue=queue, payload=json.dumps(payload), owner=owner, team_id=team_id,
                      state=QUEUED, attempts=0, max_attempts=max_attempts, time_limit_s=time_limit_s,
                      cancel_requested=False, published_at=utcnow())
            s.add(job)
            s.commit()
            return job

    def get(self, job_id: int) -> Job:
        with self.Session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise JobError(f"no job {job_id}; `datarena admin jobs list` shows them.")
        return job

    def list(self, state: str | None = None, limit: int = 50, team_id: int | None = None) -> list[Job]:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if state:
            q = q.where(Job.state == state)
        if team_id is not None:
            q = q.where(Job.team_id == team_id)
        with self.Session() as s:
            return list(s.scalars(q))

    def counts(self) -> dict[str, int]:
        with self.Session() as s:
            return dict(s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all())

    def next_queued(self, queues: tuple[str, ...]) -> int | None:
        with self.Session() as s:
            return s.scalar(select(Job.id).where(Job.state == QUEUED, Job.queue.in_(queues))
                            .order_by(Job.id).limit(1))

    # ---------------------------------------------------------------- the worker's side

    def claim(self, job_id: int, worker: str) -> Claim | None:
        """queued -> running under `worker`'s lease; None when someone else has it or it is done."""
        now = utcnow()
        ok = self._update(job_id, (Job.state == QUEUED, Job.cancel_requested.is_(False)),
                          state=RUNNING, worker=worker, last_worker=worker, attempts=Job.attempts + 1,
                          lease_expires_at=self._lease(now), heartbeat_at=now, started_at=now, error=None)
        if not ok:
            return None
        job = self.get(job_id)
        if job.worker != worker:  # cannot happen with a guarded update; be explicit anyway
            return None
        return Claim(job.id, worker, job.kind, json.loads(job.payload), job.time_limit_s, job.attempts)

    def heartbeat(self, claim: Claim, step: int | None = None, total: int | None = None,
                  message: str | None = None, rate: float | None = None, eta_s: float | None = None,
                  log_tail: str | None = None) -> bool:
        """Renew the lease and record progress; False when the job is no longer ours (stop working)."""
        now = utcnow()
        values = dict(lease_expires_at=self._lease(now), heartbeat_at=now)
        for key, v in (("progress_step", step), ("progress_total", total), ("rate", rate), ("eta_s", eta_s),
                       ("log_tail", log_tail)):
            if v is not None:
                values[key] = v
        if message is not None:
            values["progress_message"] = message[:200]
        return self._update(claim.job_id, (Job.state == RUNNING, Job.worker == claim.worker,
                                           Job.cancel_requested.is_(False)), **values)

    def finish(self, claim: Claim, result: dict, log_tail: str | None = None) -> bool:
        return self._update(claim.job_id, (Job.state == RUNNING, Job.worker == claim.worker),
                            state=FINISHED, result=json.dumps(result), finished_at=utcnow(), worker=None,
                            lease_expires_at=None, log_tail=log_tail)

    def fail(self, claim: Claim, reason: str, log_tail: str | None = None) -> bool:
        return self._update(claim.job_id, (Job.state == RUNNING, Job.worker == claim.worker),
                            state=FAILED, error=reason[:4000], finished_at=utcnow(), worker=None,
                            lease_expires_at=None, log_tail=log_tail)

    def confirm_cancel(self, claim: Claim, log_tail: str | None = None) -> bool:
        """A running job whose cancellation was requested stops: running -> cancelled."""
        return self._update(claim.job_id, (Job.state == RUNNING, Job.worker == claim.worker,
                                           Job.cancel_requested.is_(True)),
                            state=CANCELLED, finished_at=utcnow(), worker=None, lease_expires_at=None,
                            error="cancelled by an organiser", log_tail=log_tail)

    def release(self, claim: Claim) -> bool:
        """A worker that is shutting down hands a running job back: queued, this attempt not counted."""
        return self._update(claim.job_id, (Job.state == RUNNING, Job.worker == claim.worker),
                            state=QUEUED, worker=None, lease_expires_at=None, attempts=Job.attempts - 1,
                            published_at=utcnow(), progress_message="re-queued: its worker was shut down")

    # ---------------------------------------------------------------- organisers

    def cancel(self, job_id: int) -> Job:
        """A queued job is cancelled at once (it never runs); a running one at its next heartbeat."""
        job = self.get(job_id)
        if job.state in DONE:
            raise JobError(f"job {job_id} is already {job.state}; nothing to cancel.")
        if not self._update(job_id, (Job.state == QUEUED,), state=CANCELLED, cancel_requested=True,
                            finished_at=utcnow(), error="cancelled by an organiser"):
            self._update(job_id, (Job.state == RUNNING,), cancel_requested=True)
        return self.get(job_id)

    def retry(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job.state not in (FAILED, CANCELLED):
            raise JobError(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried.")
        self._update(job_id, (Job.state.in_((FAILED, CANCELLED)),), state=QUEUED, attempts=0, error=None,
                     cancel_requested=False, finished_at=None, result=None, published_at=utcnow(),
                     progress_step=None, progress_total=None, progress_message=None, rate=None, eta_s=None)
        return self.get(job_id)

    # ---------------------------------------------------------------- recovery

    def reap(self, republish_after_s: float | None = None) -> tuple[list[int], list[int]]:
        """Re-queue running jobs whose lease expired (or fail them after max attempts).

        Returns (ids to publish again, ids failed). Queued jobs not claimed for
        `republish_after_s` are also returned for publishing (the broker may have lost the
        message, e.g. a restarted Redis that keeps nothing on disk); a duplicate message is
        harmless, its claim finds the job taken.
        """
        now = utcnow()
        with self.Session() as s:
            expired = list(s.execute(select(Job.id, Job.attempts, Job.max_attempts, Job.last_worker,
                                            Job.heartbeat_at, Job.cancel_requested)
                                     .where(Job.state == RUNNING, Job.lease_expires_at < now)))
            stale = []
            if republish_after_s is not None:
                stale = list(s.scalars(select(Job.id).where(
                    Job.state == QUEUED, Job.published_at < now - timedelta(seconds=republish_after_s))))
        requeued, failed = [], []
        for job_id, attempts, max_attempts, last_worker, seen, cancel in expired:
            guard = (Job.state == RUNNING, Job.lease_expires_at < now)
            host = (last_worker or "?").split(":")[0]
            if cancel:
                if self._update(job_id, guard, state=CANCELLED, worker=None, lease_expires_at=None,
                                finished_at=now, error="cancelled by an organiser (its worker was lost)"):
                    failed.append(job_id)
            elif attempts >= max_attempts:
                reason = (f"worker lost {attempts} times; last seen on {host} at "
                          f"{seen:%Y-%m-%d %H:%M:%S} UTC" if seen else f"worker lost {attempts} times")
                if self._update(job_id, guard, state=FAILED, worker=None, lease_expires_at=None,
                                finished_at=now, error=reason):
                    failed.append(job_id)
            elif self._update(job_id, guard, state=QUEUED, worker=None, lease_expires_at=None, published_at=now,
                              progress_message=f"re-queued: worker on {host} stopped renewing its lease"):
                requeued.append(job_id)
        for job_id in stale:
            if self._update(job_id, (Job.state == QUEUED,
                                     Job.published_at < now - timedelta(seconds=republish_after_s)),
                            published_at=now):
                requeued.append(job_id)
        return requeued, failed
