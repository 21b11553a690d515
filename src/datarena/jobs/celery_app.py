"""The Celery transport: the broker carries only job ids; the database holds everything else.

Settings follow the failure modes of long scoring jobs: `acks_late` (a message is acknowledged
after the job ran), `task_reject_on_worker_lost` (a killed pool process gives the message
back), prefetch 1 (a worker never hoards jobs it cannot start), one queue per resource
(`PREFIX.cpu`, `PREFIX.gpu`), and no result backend (the job row is the result).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from datarena.jobs.models import Job

if TYPE_CHECKING:
    from celery import Celery

BROKER_ENV = "DATARENA_BROKER_URL"
PREFIX_ENV = "DATARENA_QUEUE_PREFIX"
LEASE_ENV = "DATARENA_JOB_LEASE_S"
TASK_NAME = "datarena.run_job"
DEFAULT_PREFIX = "datarena"


def queue_name(prefix: str, queue: str) -> str:
    return f"{prefix}.{queue}"


def make_celery(broker_url: str, prefix: str = DEFAULT_PREFIX) -> Celery:
    from celery import Celery  # imported here: `import datarena` stays fast

    app = Celery("datarena", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_name(prefix, "cpu"),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted broker is waited for, not given up on
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={"visibility_timeout": 6 * 3600, "socket_timeout": 15,
                                  "socket_connect_timeout": 5, "health_check_interval": 10},
    )

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(job_id: int) -> str:
        from datarena.jobs.runner import execute
        from datarena.jobs.store import worker_name

        # A prefork pool child may be ended if a job ignores its stop signal; a solo worker may not.
        hard_exit = os.environ.get("DATARENA_WORKER_POOL") == "prefork"
        return execute(worker_store(), int(job_id), worker_name("celery"), hard_exit_when_stuck=hard_exit)

    return app


def publisher(app: Celery, prefix: str):
    """A function that sends a job's id to its queue."""

    def publish(job: Job) -> None:
        app.send_task(TASK_NAME, args=[job.id], queue=queue_name(prefix, job.queue),
                      retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})

    return publish


_stores: dict[int, object] = {}
_lock = threading.Lock()


def worker_store():
    """This process's JobStore (engines are never shared across fork)."""
    from datarena.db import DATABASE_ENV, make_engine
    from datarena.jobs.store import JobStore

    with _lock:
        store = _stores.get(os.getpid())
        if store is None:
            url = os.environ.get(DATABASE_ENV)
            if not url:
                raise RuntimeError(f"{DATABASE_ENV} is not set in the worker")
            store = JobStore(make_engine(url, pool_size=4), float(os.environ.get(LEASE_ENV, "30")))
            _stores[os.getpid()] = store
        return store


def run_worker(broker_url: str, database_url: str, queues: list[str], concurrency: int = 1,
               prefix: str = DEFAULT_PREFIX, lease_s: float = 30.0, republish_after_s: float = 60.0,
               loglevel: str = "INFO", hostname: str | None = None) -> None:
    """Start a Celery worker (blocks). It also runs a reaper that recovers lost jobs."""
    from celery import signals

    from datarena.jobs.runner import Reaper

    os.environ.update({"DATARENA_DATABASE_URL": database_url, LEASE_ENV: str(lease_s),
                       "DATARENA_WORKER_POOL": "prefork" if concurrency > 1 else "solo"})
    if concurrency > 1:  # jobs side by side: their scores' seed processes share the cores (evaluate.parallel)
        os.environ.setdefault("DATARENA_SEED_PROCESSES", str(max(1, 2 * (os.cpu_count() or 1) // concurrency)))
    app = make_celery(broker_url, prefix)
    reaper_box: dict = {}

    @signals.worker_ready.connect(weak=False)
    def _start_reaper(**_kw) -> None:
        reaper = Reaper(worker_store(), publisher(app, prefix), republish_after_s, interval_s=max(0.2, lease_s / 2))
        reaper.start()
        reaper_box["r"] = reaper

    argv = ["worker", f"--queues={','.join(queue_name(prefix, q) for q in queues)}",
            f"--concurrency={concurrency}", f"--pool={'prefork' if concurrency > 1 else 'solo'}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
