"""Run one job: claim it, heartbeat while it runs, record the outcome; and recover lost jobs.

The same `execute` runs under a Celery worker and on the server's embedded thread. The job's
function runs on its own thread; this thread renews the lease every lease/3 s (with the job's
progress and log tail), enforces the kind's wall-clock limit and notices cancellation. A job
is stopped cooperatively: its next `ctx.progress(...)` raises `JobAborted` (the trainer and
every built-in kind report progress at least once per iteration).
"""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback
from collections.abc import Callable

from datarena.jobs.kinds import KINDS
from datarena.jobs.models import Job
from datarena.jobs.store import LOG_TAIL_LINES, JobStore

ABORT_GRACE_S = 10.0  # how long a stopped job may take to reach its next progress call


class JobAborted(Exception):
    """Raised inside a job's function (at a progress call) when it must stop."""


class JobContext:
    """Handed to a job's function: report progress, log lines; stop when told."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.step: int | None = None
        self.total: int | None = None
        self.message: str | None = None
        self.rate: float | None = None
        self.eta_s: float | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._abort: str | None = None
        self._t0: float | None = None
        self._step0 = 0

    def progress(self, step: int, total: int | None = None, message: str | None = None,
                 rate: float | None = None) -> None:
        if self._abort:
            raise JobAborted(self._abort)
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._step0 = now, step
        self.step, self.total = int(step), (int(total) if total is not None else self.total)
        self.message = message if message is not None else self.message
        self.rate = rate if rate is not None else self.rate
        done = self.step - self._step0
        if self.total and done > 0:
            self.eta_s = (self.total - self.step) * (now - self._t0) / done

    def log(self, line: str) -> None:
        self._lines.append(f"{time.strftime('%H:%M:%S')} {line}")

    def log_tail(self) -> str:
        return "\n".join(self._lines)

    def abort(self, reason: str) -> None:
        self._abort = reason


def execute(store: JobStore, job_id: int, worker: str, hard_exit_when_stuck: bool = False,
            stopping: threading.Event | None = None) -> str:
    """Run job `job_id` if this delivery can claim it; returns the outcome for logs.

    "skipped": someone else holds it or it is done (a duplicate or late delivery).
    "released": `stopping` was set (the server shuts down); the job went back to the queue.
    """
    claim = store.claim(job_id, worker)
    if claim is None:
        return "skipped"
    ctx = JobContext(job_id)
    kind = KINDS.get(claim.kind)
    if kind is None:
        store.fail(claim, f"unknown job kind {claim.kind!r}: this worker knows {', '.join(sorted(KINDS))}")
        return "failed"
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = kind.load()(claim.payload, ctx)
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded, never swallowed
            box["error"] = exc
            box["trace"] = traceback.format_exc(limit=8)

    thread = threading.Thread(target=run, name=f"job-{job_id}", daemon=True)
    ctx.log(f"attempt {claim.attempt} on {worker}")
    thread.start()
    beat = max(0.05, store.lease_s / 3)
    if stopping is not None:
        beat = min(beat, 0.5)  # notice a shutdown quickly
    deadline = time.monotonic() + claim.time_limit_s
    while True:
        thread.join(timeout=max(0.0, min(beat, deadline - time.monotonic())))
        if not thread.is_alive():
            break
        if stopping is not None and stopping.is_set():
            ctx.abort("worker stopping")
            thread.join(timeout=ABORT_GRACE_S)
            store.release(claim)
            return "released"
        if time.monotonic() >= deadline:
            ctx.abort("time limit")
            store.fail(claim, f"exceeded the time limit of {claim.time_limit_s:g} s", ctx.log_tail())
            _wait_or_exit(thread, hard_exit_when_stuck)
            return "failed"
        if not store.heartbeat(claim, ctx.step, ctx.total, ctx.message, ctx.rate, ctx.eta_s, ctx.log_tail()):
            job = store.get(job_id)
            if job.cancel_requested:
                ctx.abort("cancelled")
                _wait_or_exit(thread, hard_exit_when_stuck)
                store.confirm_cancel(claim, ctx.log_tail())
                return "cancelled"
            ctx.abort("lease lost")  # re-queued elsewhere: stop, the newer attempt owns the row
            _wait_or_exit(thread, hard_exit_when_stuck)
            return "lost"
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, JobAborted):
            return "aborted"
        ctx.log(box["trace"].strip().splitlines()[-1])
        message = str(exc) or type(exc).__name__
        store.fail(claim, f"{type(exc).__name__}: {message}", ctx.log_tail() + "\n" + box["trace"])
        return "failed"
    result = box.get("result")
    if not isinstance(result, dict):
        result = {"value": result}
    store.heartbeat(claim, ctx.step, ctx.total, ctx.message, ctx.rate, 0.0)
    return "finished" if store.finish(claim, result, ctx.log_tail()) else "lost"


def _wait_or_exit(thread: threading.Thread, hard_exit: bool) -> None:
    thread.join(timeout=ABORT_GRACE_S)
    if thread.is_alive() and hard_exit:
        # A job that ignores its stop signal in a disposable pool process: end the process
        # (Celery replaces it; the job's row is already failed/cancelled, so a redelivery is a no-op).
        os._exit(70)


def reap(store: JobStore, publish: Callable[[Job], None] | None, republish_after_s: float | None) -> tuple[int, int]:
    """Recover jobs whose worker vanished; publish the re-queued (and stale queued) ones again."""
    requeued, failed = store.reap(republish_after_s)
    if publish is not None:
        for job_id in requeued:
            try:
                publish(store.get(job_id))
            except Exception:  # noqa: BLE001 - the broker is down: the next reap publishes it again
                pass
    return len(requeued), len(failed)


class Reaper(threading.Thread):
    """Calls `reap` every `interval_s` until stopped (one per worker process and per server)."""

    def __init__(self, store: JobStore, publish, republish_after_s: float | None, interval_s: float):
        super().__init__(name="datarena-reaper", daemon=True)
        self.store, self.publish, self.republish_after_s = store, publish, republish_after_s
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                reap(self.store, self.publish, self.republish_after_s)
            except Exception:  # noqa: BLE001 - the database may be briefly unreachable; try again
                pass

    def stop(self) -> None:
        self.stopped.set()
