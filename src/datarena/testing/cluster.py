"""A job queue with real worker processes, as an organiser starts them (tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from datarena.challenge.store import migrate
from datarena.db import make_engine
from datarena.jobs.models import DONE, Job
from datarena.jobs.queue import JobQueue, JobSettings

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
LEASE_S = 1.5


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A JobQueue (the server's side) and, with a broker, worker processes started like an organiser would."""

    def __init__(self, tmp: Path, broker: str | None, republish_after_s: float = 30.0, lease_s: float = LEASE_S):
        self.tmp = tmp
        self.lease_s = lease_s
        self.db_url = f"sqlite:///{tmp / 'jobs.db'}"
        self.engine = make_engine(self.db_url)
        migrate(self.engine)
        self.broker = broker
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.republish_after_s = republish_after_s
        self.queue = JobQueue(self.engine, JobSettings(broker_url=broker, queue_prefix=self.prefix, lease_s=lease_s,
                                                       republish_after_s=republish_after_s, max_active_per_team=2))
        self.workers: list[subprocess.Popen] = []
        self.queue.start()

    def start_worker(self) -> subprocess.Popen:
        log = open(self.tmp / f"worker{len(self.workers)}.log", "w")
        env = {**os.environ, "DATARENA_DATABASE_URL": "", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "datarena.cli", "worker", "--broker", self.broker, "--database-url", self.db_url,
             "--prefix", self.prefix, "--queues", "cpu", "--lease-s", str(self.lease_s),
             "--republish-after-s", str(self.republish_after_s), "--hostname", f"w{len(self.workers)}@{self.prefix}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def wait(self, ids: list[int], timeout: float = 90.0, states=DONE) -> list[Job]:
        deadline = time.time() + timeout
        while True:
            jobs = [self.queue.get(i) for i in ids]
            if all(j.state in states for j in jobs):
                return jobs
            if time.time() > deadline:
                raise AssertionError(f"jobs not done in {timeout}s: {[(j.id, j.state) for j in jobs]}\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.tmp.glob("worker*.log")))

    def close(self) -> None:
        self.queue.stop()
        for w in self.workers:
            if w.poll() is None:
                self.kill(w)
        self.engine.dispose()
