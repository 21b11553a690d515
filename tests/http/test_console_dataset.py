"""Organiser actions on dataset tracks over real HTTP: disqualify / restore / rescore from the console
(the board and /changes show them), extra submissions, cancel and retry jobs, and fair quotas: a
submission whose job failed for a platform reason gives its slot back (a real Celery worker killed
until the job fails "worker lost"), one the trainer rejected keeps counting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from datarena.challenge.arena import Arena
from datarena.client import ArenaError
from datarena.http.runner import BackgroundServer
from datarena.jobs.models import platform_fault
from tests.conftest import serving
from tests.http.test_console import ORG_PASSWORD, csrf_of, organiser_client
from tests.http.test_dataset_track import challenge, scenes, team, wait_scored  # noqa: F401 - the scenes fixture
from tests.jobs.test_jobs import REDIS, _port_open


def test_failures_are_the_platforms_unless_the_input_was_rejected():
    assert platform_fault("failed", "worker lost 3 times; last seen on h at 12:00 UTC")
    assert platform_fault("failed", "exceeded the time limit of 60 s")
    assert platform_fault("cancelled", "cancelled by an organiser")
    assert platform_fault("failed", "OperationalError: database is locked")  # storage
    assert platform_fault("failed", "ConnectionError: broker gone")
    assert platform_fault("failed", "SubmissionError: every mask is ignore (255)") is None  # the dataset's fault
    assert platform_fault("failed", "ConfigError: 3 classes, the track has 11") is None
    assert platform_fault("finished", None) is None


def test_disqualify_restore_rescore_grant_cancel_from_the_console(tmp_path, scenes):  # noqa: F811
    def spec(db):
        s = challenge(tmp_path, scenes, db)
        s.tracks[0].submissions_per_day = 10
        return s

    with serving("sqlite", spec) as (arena, url):
        arena.create_organiser("olga", ORG_PASSWORD)
        a, b = team(arena, url), team(arena, url)
        sa = a.submit_dataset("scenes", scenes["target"])
        sb = b.submit_dataset("scenes", scenes["prior"])
        wait_scored(a, sa["job_id"])
        wait_scored(b, sb["job_id"])
        c = organiser_client(url)
        page = c.get("/organiser/tracks/scenes/submissions")
        assert page.status_code == 200 and a.username in page.text
        csrf = csrf_of(page.text)

        r = c.post(f"/organiser/tracks/scenes/submissions/{sa['submission_id']}/disqualify",
                   data={"csrf_token": csrf, "reason": "test images in the training set"})
        assert r.status_code == 303
        board = a.track_leaderboard("scenes")
        assert a.username not in [row["team"] for row in board["rows"]]
        assert board["disqualified"] == [{"team": a.username, "submission": sa["submission_id"],
                                          "reason": "test images in the training set"}]
        assert "test images in the training set" in httpx.get(f"{url}/tracks/scenes").text
        c.post(f"/organiser/tracks/scenes/submissions/{sa['submission_id']}/restore", data={"csrf_token": csrf})
        r = c.post(f"/organiser/tracks/scenes/submissions/{sa['submission_id']}/verify", data={"csrf_token": csrf})
        assert r.status_code == 303
        verify_job = arena.audit_entries(limit=1)[0]
        assert verify_job["action"] == "verify" and verify_job["actor"] == "organiser:olga"
        assert a.username in [row["team"] for row in a.track_leaderboard("scenes")["rows"]]

        before = {row["team"]: row["job_id"] for row in a.track_leaderboard("scenes")["rows"]}
        r = c.post("/organiser/tracks/scenes/rescore", data={"csrf_token": csrf, "reason": "budget fixed"})
        assert r.status_code == 303 and r.headers["location"] == "/organiser/jobs"
        new_jobs = {a.username: a.dataset_submissions("scenes")[0]["job_id"],
                    b.username: b.dataset_submissions("scenes")[0]["job_id"]}
        assert set(new_jobs.values()).isdisjoint(before.values())
        for job_id in new_jobs.values():
            wait_scored(a if job_id == new_jobs[a.username] else b, job_id)
        rows = a.track_leaderboard("scenes")["rows"]
        assert {row["team"]: row["job_id"] for row in rows} == new_jobs

        # b uses its quota, then an organiser grants one more
        b.submit_dataset("scenes", scenes["target"])
        b.submit_dataset("scenes", scenes["target"])
        with pytest.raises(ArenaError) as e:
            b.submit_dataset("scenes", scenes["target"])
        assert "3 of 3" in str(e.value)
        r = c.post("/organiser/tracks/scenes/grant", data={"csrf_token": csrf, "team": b.username, "extra": "1",
                                                          "reason": "lost an upload to our outage"})
        assert r.status_code == 303
        arena.jobs.stop()  # hold the queue: the next job stays queued for the organiser to cancel
        extra = b.submit_dataset("scenes", scenes["target"])
        jobs_page = c.get("/organiser/jobs")
        assert f'data-job="{extra["job_id"]}"' in jobs_page.text
        r = c.post(f"/organiser/jobs/{extra['job_id']}/cancel", data={"csrf_token": csrf})
        assert r.status_code == 303 and arena.jobs.get(extra["job_id"]).state == "cancelled"
        mine = {s["id"]: s for s in b.dataset_submissions("scenes")}
        assert mine[extra["submission_id"]]["slot_returned"] == "cancelled by an organiser"
        # the cancelled one gave its slot back: one more upload is accepted, then the granted 4 are used
        b.submit_dataset("scenes", scenes["target"])
        with pytest.raises(ArenaError) as e:
            b.submit_dataset("scenes", scenes["target"])
        assert "4 of 4" in str(e.value)

        audit = c.get("/organiser/audit").text
        for action in ("disqualify", "restore", "rescore", "grant", "cancel_job"):
            assert f"<td>{action}</td>" in audit, action
        public = {(r["action"], r["reason"]) for r in httpx.get(f"{url}/api/changes").json()}
        assert ("disqualify", "test images in the training set") in public and ("rescore", "budget fixed") in public
        assert ("grant", "+1: lost an upload to our outage") in public and ("cancel_job", "") in public


def test_a_worker_lost_job_gives_the_slot_back_and_a_rejected_dataset_does_not(tmp_path, scenes):  # noqa: F811
    if not _port_open("127.0.0.1", 6379):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = f"fq{uuid.uuid4().hex[:8]}"
    spec = challenge(tmp_path, scenes, broker_url=REDIS, queue_prefix=prefix)
    spec.tracks[0].submissions_per_phase = 1
    spec.tracks[0].submissions_per_day = 10
    spec.tracks[0].budget_overrides = {**spec.tracks[0].budget_overrides, "iterations": 20000}  # runs until killed
    arena = Arena(spec)
    arena.start(progress=False)

    def worker():
        return subprocess.Popen([sys.executable, "-m", "datarena.cli", "worker", "--broker", REDIS, "--database-url",
                                 arena.url, "--prefix", prefix, "--lease-s", "2"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    try:
        with BackgroundServer(arena) as url:
            t = team(arena, url)
            sub = t.submit_dataset("scenes", scenes["target"])
            for _ in range(3):  # max_attempts: each delivery's worker dies under it
                w = worker()
                deadline = time.time() + 90
                while arena.jobs.get(sub["job_id"]).state != "running" and time.time() < deadline:
                    time.sleep(0.05)
                os.killpg(w.pid, 9)
                w.wait()
                deadline = time.time() + 20
                while arena.jobs.get(sub["job_id"]).state == "running" and time.time() < deadline:
                    time.sleep(0.1)
            job = arena.jobs.get(sub["job_id"])
            assert job.state == "failed" and job.error.startswith("worker lost"), (job.state, job.error)
            mine = t.dataset_submissions("scenes")[0]
            assert mine["slot_returned"].startswith("worker lost")
            assert "does not count against your quota" in httpx.get(
                f"{url}/tracks/scenes", cookies={"datarena_session": t.token}).text
            # the slot is back: a second upload is accepted although the phase allows one
            again = t.submit_dataset("scenes", scenes["target"])
            # its job fails because of the dataset itself (as the trainer rejecting it records it): it counts
            claim = arena.jobs.store.claim(again["job_id"], "test-worker")
            assert claim is not None
            arena.jobs.store.fail(claim, "SubmissionError: the trainer found no labelled pixel")
            assert t.dataset_submissions("scenes")[0]["slot_returned"] is None
            with pytest.raises(ArenaError) as e:
                t.submit_dataset("scenes", scenes["target"])
            assert "1 of 1" in str(e.value)
    finally:
        arena.jobs.stop()
        arena.engine.dispose()
