"""The job queue's cost and recovery time, measured in one run.

Run: .venv/bin/python benchmarks/bench_jobs.py [--jobs 200] [--workers 2] [--lease 2]
     [--broker redis://127.0.0.1:6379/0]

Prints, against calling the job function inline (the baseline of the same run):
* Celery path: 200 trivial jobs (`noop`) over N worker processes: wall time, jobs/s, and the
  overhead per job = wall x workers / jobs - inline time per job (worker time a job costs
  beyond its function: claim, heartbeat, finish, broker round trip);
* the latency of one job at a time (submit -> finished, median of 20);
* the embedded worker on the same 200 jobs;
* recovery: a worker killed (SIGKILL) in the middle of a job; seconds until the job is
  re-queued, against the goal of 2 x lease (3 trials).
Goals (issue 18): overhead < 50 ms per job; re-queue within 2 x the lease.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datarena.jobs.builtin import noop_job
from datarena.jobs.runner import JobContext
from datarena.testing.cluster import Cluster
from datarena.testing.cluster import port_open as _port_open


def inline_seconds(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        noop_job({"i": i}, JobContext(i))
    return (time.perf_counter() - t0) / n


def batch(cluster: Cluster, n: int) -> float:
    t0 = time.perf_counter()
    ids = [cluster.queue.submit("noop", {"i": i}).id for i in range(n)]
    jobs = cluster.wait(ids, timeout=600)
    assert all(j.state == "finished" for j in jobs), [j.state for j in jobs]
    return time.perf_counter() - t0


def one_at_a_time(cluster: Cluster, n: int = 20) -> float:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        job = cluster.queue.submit("noop", {"i": i})
        while cluster.queue.get(job.id).state != "finished":
            time.sleep(0.001)
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat)


def requeue_after_kill(cluster: Cluster, trials: int) -> list[float]:
    out = []
    for _ in range(trials):
        victim = cluster.workers[0]
        job = cluster.queue.submit("sleep", {"seconds": 60})
        cluster.wait([job.id], states=("running",), timeout=120)
        holder = cluster.queue.get(job.id).last_worker.split(":")[1]
        victim = next(w for w in cluster.workers if str(w.pid) == holder)
        cluster.kill(victim)
        t0 = time.perf_counter()
        while True:
            j = cluster.queue.get(job.id)
            if j.state == "queued" or j.attempts >= 2:
                out.append(time.perf_counter() - t0)
                break
            time.sleep(0.01)
        cluster.queue.cancel(job.id)
        cluster.wait([job.id], timeout=60)
        cluster.workers.remove(victim)
        cluster.start_worker()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    import datarena.testing.cluster as cluster_module

    cluster_module.LEASE_S = args.lease  # what Cluster reads when it starts workers
    inline = inline_seconds(args.jobs)
    print(f"inline noop: {inline * 1e6:.1f} us per job")

    host, port = args.broker.split("//")[1].split("/")[0].split("@")[-1].split(":")
    if not _port_open(host, int(port)):
        sys.exit(f"no broker at {args.broker}")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), args.broker)
        try:
            for _ in range(args.workers):
                cluster.start_worker()
            batch(cluster, 4)  # workers connected and warm
            wall = batch(cluster, args.jobs)
            per_job = wall * args.workers / args.jobs - inline
            single = one_at_a_time(cluster)
            print(f"celery ({args.workers} workers, {args.jobs} jobs): {wall:.2f} s, {args.jobs / wall:.1f} jobs/s, "
                  f"overhead {per_job * 1e3:.1f} ms per job (goal < 50), {per_job / max(inline, 1e-9):.0f}x inline; "
                  f"one job at a time: {single * 1e3:.1f} ms submit->finished (median of 20)")
            times = requeue_after_kill(cluster, args.trials)
            print(f"re-queue after kill -9 (lease {args.lease:g} s): "
                  + ", ".join(f"{t:.2f} s" for t in times)
                  + f"; max {max(times):.2f} s = {max(times) / args.lease:.2f} x lease (goal <= 2)")
        finally:
            cluster.close()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), None)
        try:
            batch(cluster, 4)
            wall = batch(cluster, args.jobs)
            single = one_at_a_time(cluster)
            print(f"embedded (1 thread, {args.jobs} jobs): {wall:.2f} s, {args.jobs / wall:.1f} jobs/s, "
                  f"overhead {(wall / args.jobs - inline) * 1e3:.1f} ms per job; "
                  f"one job at a time: {single * 1e3:.1f} ms (median of 20)")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
