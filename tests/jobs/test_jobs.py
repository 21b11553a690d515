"""The job queue under faults: real Redis / RabbitMQ, real worker processes, a real database.

Every behaviour runs twice: on Celery workers (two `datarena worker` processes on the real
Redis at 127.0.0.1:6379) and on the embedded in-process worker a server uses without a
broker. Broker-only faults (a killed worker, a restarted broker, RabbitMQ) and the
server-restart fault of the embedded worker have their own tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from datarena.db import make_engine
from datarena.jobs.models import DONE
from datarena.jobs.queue import JobQueue
from datarena.jobs.runner import execute
from datarena.jobs.store import JobError, worker_name
from datarena.testing.cluster import AMQP, LEASE_S, REDIS, Cluster, free_port, port_open

_port_open, _free_port = port_open, free_port  # the names other test modules import


@pytest.fixture(params=["embedded", "celery-redis"])
def cluster(request, tmp_path):
    # a test marked lease_s(S) runs with that lease instead of the short LEASE_S
    mark = request.node.get_closest_marker("lease_s")
    lease = mark.args[0] if mark else LEASE_S
    if request.param == "embedded":
        c = Cluster(tmp_path, None, lease_s=lease)
    else:
        if not _port_open("127.0.0.1", 6379):
            pytest.skip("Redis is not reachable at 127.0.0.1:6379 (start redis-server to run the Celery tests)")
        c = Cluster(tmp_path, REDIS, lease_s=lease)
        c.start_worker()
        c.start_worker()
    yield c
    c.close()


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> tuple[Path, Path]:
    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.writers import write_scenes

    root = tmp_path_factory.mktemp("scenes")
    write_scenes(load_grammar("digit_scenes"), 8, 0, root / "train", fmt="voc")
    write_scenes(load_grammar("digit_scenes_target"), 4, 1, root / "test", fmt="voc")
    return root / "train", root / "test"


def marker_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------- behaviours, on both transports


# Claimed once each is a claim about the queue, not about the machine's speed: with the 1.5 s lease
# a heartbeat delayed on a slow, loaded 2-core machine (2026-12-04 evening, a clean-clone run) let
# two of the eight jobs be re-queued and run twice (attempts 2, each still finished once).
@pytest.mark.lease_s(15.0)
def test_small_real_jobs_each_finish_exactly_once(cluster, tiny_scenes, tmp_path):
    train, test = tiny_scenes
    over = {"iterations": 6, "batch_size": 2, "pretrained": "none", "class_weights": "uniform"}
    ids = [cluster.queue.submit("score_dataset", {"dataset": str(train), "test": str(test),
                                                  "out": str(tmp_path / f"score{i}"), "overrides": over}).id
           for i in range(8)]
    jobs = cluster.wait(ids, timeout=240)
    assert [j.state for j in jobs] == ["finished"] * 8, [(j.id, j.error) for j in jobs]
    assert [j.attempts for j in jobs] == [1] * 8  # claimed once each
    for j in jobs:
        res = j.as_json()["result"]
        assert 0.0 <= res["miou"] <= 1.0 and len(res["model_sha256"]) == 64 and res["iterations"] == 6
        assert Path(res["artefacts"]["report"]).is_file()
        assert (j.progress_step, j.progress_total) == (6, 6) and j.rate > 0
    if cluster.broker:  # both worker processes took jobs
        assert len({j.last_worker.split(":")[1] for j in jobs}) == 2


def test_raise_time_limit_and_cancel(cluster, tmp_path):
    q = cluster.queue
    boom = q.submit("sleep", {"seconds": 0.1, "fail": "the dataset is corrupt"})
    slow = q.submit("sleep", {"seconds": 60}, time_limit_s=1.0)
    after = q.submit("noop", {"still": "serving"})
    # a queued job cancelled before any worker sees its message never runs, even if delivered
    marker = tmp_path / "cancelled.txt"
    job = q.store.create("sleep", "cpu", {"seconds": 0.1, "marker": str(marker)}, time_limit_s=60)
    assert q.cancel(job.id).state == "cancelled"
    q.publish(job)
    done = cluster.wait([boom.id, slow.id, after.id])
    assert done[0].state == "failed" and done[0].error == "RuntimeError: the dataset is corrupt"
    assert "RuntimeError" in done[0].log_tail
    assert done[1].state == "failed" and "exceeded the time limit of 1 s" in done[1].error
    assert done[2].state == "finished"
    time.sleep(0.5)
    assert marker_lines(marker) == [] and q.get(job.id).state == "cancelled"
    # a running job is stopped at its next heartbeat
    run_marker = tmp_path / "running.txt"
    running = q.submit("sleep", {"seconds": 60, "marker": str(run_marker)})
    cluster.wait([running.id], states=("running",))
    q.cancel(running.id)
    stopped = cluster.wait([running.id], timeout=20)[0]
    assert stopped.state == "cancelled" and len(marker_lines(run_marker)) == 1
    # organisers can retry a failed job; it runs again from attempt 1
    retried = q.retry(boom.id)
    assert retried.state == "queued" and retried.attempts == 0
    assert cluster.wait([boom.id])[0].attempts == 1
    with pytest.raises(JobError, match="only failed or cancelled"):
        q.retry(after.id)


def test_same_job_delivered_twice_runs_once(cluster, tmp_path):
    marker = tmp_path / "runs.txt"
    job = cluster.queue.submit("sleep", {"seconds": 0.6, "marker": str(marker)})
    if cluster.broker:
        for _ in range(3):  # duplicate deliveries, as after a broker redelivery
            cluster.queue.publish(job)
    else:
        extra = [threading.Thread(target=execute, args=(cluster.queue.store, job.id, worker_name("dup")))
                 for _ in range(3)]
        for t in extra:
            t.start()
        for t in extra:
            t.join()
    done = cluster.wait([job.id])[0]
    time.sleep(1.0)  # let any late duplicate arrive
    assert done.state == "finished" and done.attempts == 1
    assert len(marker_lines(marker)) == 1
    assert cluster.queue.get(job.id).state == "finished"


def test_team_quota(cluster):
    q = cluster.queue
    a = q.submit("sleep", {"seconds": 5}, team_id=7)
    q.submit("sleep", {"seconds": 5}, team_id=7)
    with pytest.raises(JobError, match="at most 2"):
        q.submit("noop", {}, team_id=7)
    q.submit("noop", {}, team_id=8)  # another team is not held back
    q.cancel(a.id)
    cluster.wait([a.id], timeout=20)  # a running job stops at its next heartbeat
    q.submit("noop", {}, team_id=7)  # a slot is free again


# ---------------------------------------------------------------- broker faults


@pytest.fixture
def redis_cluster(tmp_path):
    if not _port_open("127.0.0.1", 6379):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379 (start redis-server to run the Celery tests)")
    c = Cluster(tmp_path, REDIS)
    yield c
    c.close()


def test_killed_worker_job_finishes_on_the_other(redis_cluster, tmp_path):
    c = redis_cluster
    first = c.start_worker()
    marker = tmp_path / "runs.txt"
    job = c.queue.submit("sleep", {"seconds": 3, "marker": str(marker)})
    c.wait([job.id], states=("running",), timeout=60)
    deadline = time.time() + 30  # "running" is stored before the job writes its marker: kill it after
    while not marker_lines(marker) and time.time() < deadline:
        time.sleep(0.05)
    c.start_worker()  # a second worker joins; the first dies in the middle of the job
    c.kill(first)
    t_kill = time.time()
    c.wait([job.id], states=("queued", "running"), timeout=5)
    requeued_in = None
    while time.time() - t_kill < 4 * LEASE_S + 5:
        j = c.queue.get(job.id)
        if j.attempts == 2 or j.state == "queued":
            requeued_in = time.time() - t_kill
            break
        time.sleep(0.05)
    assert requeued_in is not None and requeued_in <= 2 * LEASE_S + 1.0
    done = c.wait([job.id], timeout=60)[0]
    assert done.state == "finished" and done.attempts == 2
    pids = [line.split()[1] for line in marker_lines(marker)]
    assert len(pids) == 2 and pids[0] != pids[1] and pids[0] == str(first.pid)
    assert c.queue.store.counts().get("running", 0) == 0


def test_job_fails_with_reason_when_every_worker_keeps_dying(redis_cluster, tmp_path):
    c = redis_cluster
    job = c.queue.submit("sleep", {"seconds": 30})
    for _ in range(3):
        w = c.start_worker()
        c.wait([job.id], states=("running",), timeout=60)
        c.kill(w)
        deadline = time.time() + 4 * LEASE_S + 5
        while c.queue.get(job.id).state == "running" and time.time() < deadline:
            time.sleep(0.05)
    done = c.wait([job.id], timeout=20)[0]
    assert done.state == "failed" and done.attempts == 3
    assert done.error.startswith("worker lost 3 times; last seen on ") and " UTC" in done.error


def test_broker_restarted_under_load(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (needed to restart a private broker)")
    port = _free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(tmp_path)]
    redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if _port_open("127.0.0.1", port):
            break
        time.sleep(0.05)
    c = Cluster(tmp_path, f"redis://127.0.0.1:{port}/0", republish_after_s=3.0)
    try:
        c.start_worker()
        c.start_worker()
        ids = [c.queue.submit("sleep", {"seconds": 0.4}).id for _ in range(16)]
        deadline = time.time() + 60
        while sum(c.queue.get(i).state == "finished" for i in ids) < 3 and time.time() < deadline:
            time.sleep(0.05)
        redis.kill()  # the broker dies with queued messages (it keeps nothing on disk)
        redis.wait()
        time.sleep(1.5)
        redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        jobs = c.wait(ids, timeout=120)
        assert [j.state for j in jobs] == ["finished"] * len(ids), c.logs()
        assert all(j.attempts >= 1 for j in jobs)
    finally:
        c.close()
        redis.kill()


def test_rabbitmq_broker(tmp_path):
    if not _port_open("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672 (guest/guest)")
    c = Cluster(tmp_path, AMQP)
    try:
        c.start_worker()
        marker = tmp_path / "runs.txt"
        ids = [c.queue.submit("sleep", {"seconds": 0.2, "marker": str(marker)}).id for _ in range(4)]
        ids.append(c.queue.submit("sleep", {"seconds": 0.1, "fail": "over amqp"}).id)
        jobs = c.wait(ids, timeout=90)
        assert [j.state for j in jobs] == ["finished"] * 4 + ["failed"]
        assert len(marker_lines(marker)) == 4 and jobs[-1].error == "RuntimeError: over amqp"
    finally:
        c.close()


# ---------------------------------------------------------------- the embedded worker survives a server restart


def test_server_restart_while_a_job_runs(tmp_path):
    import yaml

    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(yaml.safe_dump({
        "title": "restart", "data_dir": "data", "exercises": [{"id": "00"}],
        "jobs": {"lease_s": LEASE_S}, "argon2_time_cost": 1, "argon2_memory_kib": 8192,
    }))
    env = {**os.environ, "DATARENA_DATABASE_URL": "", "DATARENA_BROKER_URL": ""}

    def serve() -> subprocess.Popen:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "datarena.cli", "serve", "--challenge", str(challenge),
                                 "--port", str(port)], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if _port_open("127.0.0.1", port):
                return proc
            time.sleep(0.1)
        raise AssertionError("the server did not start")

    server = serve()
    from datarena.challenge.spec import load_challenge

    spec = load_challenge(challenge)
    engine = make_engine(spec.resolved_database_url())
    q = JobQueue(engine, spec.jobs)  # not started: the server's own worker runs the job
    marker = tmp_path / "runs.txt"
    job = q.submit("sleep", {"seconds": 3, "marker": str(marker)})
    deadline = time.time() + 30
    while q.get(job.id).state != "running" and time.time() < deadline:
        time.sleep(0.05)
    assert q.get(job.id).state == "running"
    while not marker_lines(marker) and time.time() < deadline:  # "running" is stored before the marker
        time.sleep(0.05)
    os.killpg(server.pid, signal.SIGKILL)  # the server dies in the middle of the job
    server.wait()
    server = serve()
    try:
        deadline = time.time() + 60
        while q.get(job.id).state not in DONE and time.time() < deadline:
            time.sleep(0.1)
        done = q.get(job.id)
        assert done.state == "finished" and done.attempts == 2
        assert len(marker_lines(marker)) == 2
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        engine.dispose()


# ---------------------------------------------------------------- progress over HTTP


def test_team_watches_its_job_over_http(tmp_path, phase_data_cache):
    import httpx

    from datarena.challenge.arena import Arena
    from datarena.http.runner import BackgroundServer
    from tests.conftest import fast_challenge, install_phase_cache

    install_phase_cache(phase_data_cache, tmp_path)
    arena = Arena(fast_challenge(tmp_path, jobs={"lease_s": LEASE_S}))
    arena.start(progress=False)
    for name in ("owner_team", "other_team"):
        arena.register(name, "correct horse battery")
        arena.validate_team(name)
    owner = arena.login("owner_team", "correct horse battery")
    with BackgroundServer(arena) as url:
        tokens = {n: httpx.post(f"{url}/api/token", json={"name": n, "password": "correct horse battery"}).json()["token"]
                  for n in ("owner_team", "other_team")}
        job = arena.jobs.submit("sleep", {"seconds": 2}, owner="submission:1", team_id=owner.id)
        seen = []
        while True:
            r = httpx.get(f"{url}/api/jobs/{job.id}", headers={"authorization": f"Bearer {tokens['owner_team']}"})
            assert r.status_code == 200
            body = r.json()
            seen.append(body)
            if body["state"] in DONE:
                break
            time.sleep(0.2)
        running = [b for b in seen if b["state"] == "running" and b["progress"]["step"]]
        assert running, seen
        p = running[-1]["progress"]
        assert 0 < p["step"] <= p["total"] and p["eta_s"] is not None and "slept" in p["message"]
        assert body["state"] == "finished" and body["result"]["slept_s"] == 2
        assert not {"payload", "worker", "log_tail"} & set(body)  # nothing of the organiser's side
        other = httpx.get(f"{url}/api/jobs/{job.id}", headers={"authorization": f"Bearer {tokens['other_team']}"})
        assert other.status_code == 404
        assert httpx.get(f"{url}/api/jobs/{job.id}").status_code == 401
    arena.engine.dispose()


def test_admin_jobs_cli(tmp_path):
    import json

    import yaml

    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(yaml.safe_dump({"title": "cli", "data_dir": "data", "exercises": [{"id": "00"}]}))
    env = {**os.environ, "COLUMNS": "200", "DATARENA_DATABASE_URL": "", "DATARENA_BROKER_URL": ""}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "datarena.cli", "admin", "jobs", *args, "--challenge", str(challenge)],
                              capture_output=True, text=True, env=env, timeout=120)

    out = cli("submit", "sleep", "--payload", '{"seconds": 1, "fail": "no GPU here"}')
    assert out.returncode == 0 and "queued job 1" in out.stdout, out.stderr
    bad = cli("submit", "teleport")
    assert bad.returncode != 0 and "unknown job kind 'teleport'" in bad.stderr and "score_dataset" in bad.stderr
    assert cli("submit", "noop", "--payload", "{not json").returncode != 0
    listing = cli("list")
    assert listing.returncode == 0 and "sleep" in listing.stdout and "queued" in listing.stdout
    assert "embedded mode" in listing.stdout
    cancelled = cli("cancel", "1")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = cli("cancel", "1")
    assert again.returncode != 0 and "already cancelled" in again.stderr
    retried = cli("retry", "1")
    assert retried.returncode == 0 and "queued" in retried.stdout
    shown = cli("show", "1")
    body = json.loads(shown.stdout)
    assert body["state"] == "queued" and body["payload"] == {"seconds": 1, "fail": "no GPU here"}
    assert cli("show", "99").returncode != 0


def test_embedded_worker_hands_its_job_back_on_shutdown(tmp_path):
    c = Cluster(tmp_path, None)
    try:
        job = c.queue.submit("sleep", {"seconds": 30})
        c.wait([job.id], states=("running",), timeout=30)
        t0 = time.time()
        c.queue.stop()  # the server shuts down in the middle of the job
        assert time.time() - t0 < 5
        back = c.queue.get(job.id)
        assert back.state == "queued" and back.attempts == 0 and back.worker is None
        short = c.queue.store.create("sleep", "cpu", {"seconds": 0.2}, time_limit_s=60)
        c.queue.cancel(job.id)
        c.queue.start()  # the next start runs what is queued
        assert c.wait([short.id], timeout=30)[0].state == "finished"
    finally:
        c.close()
