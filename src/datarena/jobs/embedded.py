"""The embedded worker: with no broker configured, the server runs jobs on one thread of its own.

It executes the very same `runner.execute` as a Celery worker, one job at a time, taking the
oldest queued job from the `jobs` table; a server restart while a job runs leaves a lease that
expires, after which the reaper re-queues the job and this thread runs it again.
"""

from __future__ import annotations

import threading

from datarena.jobs.runner import execute, reap
from datarena.jobs.store import JobStore, worker_name


class EmbeddedWorker(threading.Thread):
    def __init__(self, store: JobStore, queues: tuple[str, ...] = ("cpu", "gpu"), poll_s: float = 0.5):
        super().__init__(name="datarena-embedded-worker", daemon=True)
        self.store, self.queues, self.poll_s = store, queues, poll_s
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.reap_every_s = max(0.2, store.lease_s / 2)

    def run(self) -> None:
        import time

        last_reap = 0.0
        while not self.stopped.is_set():
            try:
                if time.monotonic() - last_reap >= self.reap_every_s:
                    reap(self.store, None, None)
                    last_reap = time.monotonic()
                job_id = self.store.next_queued(self.queues)
                if job_id is not None:
                    execute(self.store, job_id, worker_name("embedded"), stopping=self.stopped)
                    continue
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker thread
                pass
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def notify(self) -> None:
        self.wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after handing a running job back to the queue (it resumes on the next start)."""
        self.stopped.set()
        self.wake.set()
        self.join(timeout)
