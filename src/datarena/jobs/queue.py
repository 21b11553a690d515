"""JobQueue: what the server and the organiser CLI use (submit, look, cancel, retry).

With a broker URL (the challenge's `jobs.broker_url` or DATARENA_BROKER_URL) jobs go to Celery
workers (`datarena worker`); without one, `start()` runs an embedded worker thread.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field
from sqlalchemy import Engine

from datarena.errors import ConfigError
from datarena.jobs.celery_app import BROKER_ENV, DEFAULT_PREFIX, PREFIX_ENV
from datarena.jobs.kinds import QUEUES, get_kind
from datarena.jobs.models import Job
from datarena.jobs.store import JobStore


class JobSettings(BaseModel):
    """The `jobs:` section of a challenge file."""

    broker_url: str | None = None  # None: DATARENA_BROKER_URL, else the embedded worker
    queue_prefix: str = DEFAULT_PREFIX
    lease_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    max_active_per_team: int = Field(3, ge=1)
    republish_after_s: float = Field(120.0, gt=0)
    time_limits: dict[str, float] = Field(default_factory=dict)  # kind -> seconds

    def resolved_broker(self) -> str | None:
        return os.environ.get(BROKER_ENV) or self.broker_url

    def resolved_prefix(self) -> str:
        return os.environ.get(PREFIX_ENV) or self.queue_prefix


class JobQueue:
    def __init__(self, engine: Engine, settings: JobSettings | None = None):
        self.settings = settings or JobSettings()
        self.store = JobStore(engine, self.settings.lease_s)
        self.broker = self.settings.resolved_broker()
        self._publish = None
        self._worker = None
        self._reaper = None
        if self.broker:
            from datarena.jobs.celery_app import make_celery, publisher

            self.celery = make_celery(self.broker, self.settings.resolved_prefix())
            self._publish = publisher(self.celery, self.settings.resolved_prefix())

    @property
    def mode(self) -> str:
        return "celery" if self.broker else "embedded"

    def start(self) -> None:
        """Start what moves jobs in this process: the embedded worker, or a reaper beside Celery."""
        if self.broker:
            from datarena.jobs.runner import Reaper

            if self._reaper is None:
                self._reaper = Reaper(self.store, self._publish, self.settings.republish_after_s,
                                      interval_s=max(0.2, self.settings.lease_s / 2))
                self._reaper.start()
        elif self._worker is None:
            from datarena.jobs.embedded import EmbeddedWorker

            self._worker = EmbeddedWorker(self.store, QUEUES)
            self._worker.start()

    def stop(self) -> None:
        for t in (self._worker, self._reaper):
            if t is not None:
                t.stop()
        self._worker = self._reaper = None

    def submit(self, kind: str, payload: dict, owner: str | None = None, team_id: int | None = None,
               queue: str | None = None, time_limit_s: float | None = None) -> Job:
        """Record a job (refused past the team's quota) and hand it to a worker."""
        k = get_kind(kind)
        if queue is not None and queue not in QUEUES:
            raise ConfigError(f"queue must be one of {', '.join(QUEUES)}, got {queue!r}.")
        job = self.store.create(kind, queue or k.queue, payload,
                                time_limit_s=time_limit_s or self.settings.time_limits.get(kind, k.time_limit_s),
                                max_attempts=self.settings.max_attempts, owner=owner, team_id=team_id,
                                max_active_per_team=self.settings.max_active_per_team if team_id is not None else None)
        self.publish(job)
        return job

    def publish(self, job: Job) -> None:
        if self._publish is not None:
            try:
                self._publish(job)
            except Exception:  # noqa: BLE001 - broker down: the job stays queued, the reaper republishes it
                pass
        elif self._worker is not None:
            self._worker.notify()

    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def list(self, state: str | None = None, limit: int = 50) -> list[Job]:
        return self.store.list(state, limit)

    def cancel(self, job_id: int) -> Job:
        return self.store.cancel(job_id)

    def retry(self, job_id: int) -> Job:
        job = self.store.retry(job_id)
        self.publish(job)
        return job
