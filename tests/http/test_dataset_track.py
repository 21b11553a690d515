"""Dataset tracks over real HTTP: upload -> validate -> scoring job -> mIoU on the leaderboard.

SQLite and PostgreSQL, the embedded worker and a Celery worker on Redis; every bad upload is
refused with what to fix and costs nothing; quotas; the syntagen protocol's two deadlines;
verification by re-training and regeneration.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from datarena.challenge.arena import Arena
from datarena.client import ArenaClient, ArenaError
from datarena.data.segmentation import make_voc_dirs, write_pair
from datarena.http.runner import BackgroundServer
from tests.conftest import fast_challenge, serving
from tests.http.test_server import new_team
from tests.jobs.test_jobs import REDIS, _port_open

PASSWORD = "correct horse battery"
FAST = {"iterations": 8, "batch_size": 2, "pretrained": "none", "class_weights": "uniform", "checkpoint_every": 4}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Small datasets rendered once: a test set, a prior-grammar and a target-grammar submission."""
    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.writers import write_scenes

    root = tmp_path_factory.mktemp("dsets")
    out = {}
    for name, grammar, n, seed in (("test", "digit_scenes_target", 6, 99), ("prior", "digit_scenes", 10, 0),
                                   ("target", "digit_scenes_target", 10, 1)):
        out[name] = write_scenes(load_grammar(grammar), n, seed, root / name, fmt="voc", show_progress=False)
    voc_test = root / "voc_test"
    make_voc_dirs(voc_test)
    rng = np.random.default_rng(0)
    write_pair(voc_test, "t0", rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), np.zeros((512, 512), np.uint8))
    out["voc_test"] = voc_test
    return out


def challenge(tmp: Path, scenes: dict[str, Path], db_url: str | None = None, **jobs):
    future = datetime.utcnow() + timedelta(days=1)
    return fast_challenge(tmp, db_url, exercises=None, tracks=[
        {"id": "scenes", "kind": "dataset", "title": "Digit scenes", "classes": "digits", "image_size": [64, 64],
         "budget": "digit_scenes", "budget_overrides": FAST, "test_set": str(scenes["test"]),
         "submissions_per_phase": 3, "submissions_per_day": 2, "max_upload_mb": 2, "max_unpacked_mb": 5,
         "max_files": 200},
        {"id": "voc", "kind": "dataset", "title": "SyntaGen", "classes": "voc", "budget": "syntagen",
         "budget_overrides": {**FAST, "backbone": "resnet18", "crop_size": 64, "iterations": 2},
         "test_set": str(scenes["voc_test"]), "protocol": "syntagen",
         "deadline1": future.isoformat(), "deadline2": (future + timedelta(days=1)).isoformat()},
    ], jobs={"lease_s": 2.0, **jobs})


def team(arena: Arena, url: str, validated: bool = True) -> ArenaClient:
    return new_team(arena, url, validated)  # the server tests' helper: a registered (and validated) team


def wait_scored(c: ArenaClient, job_id: int) -> dict:
    job = c.wait_for_job(job_id, timeout=300, poll_s=0.3)
    assert job["state"] == "finished", job
    return job


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request, tmp_path, scenes):
    with serving(request.param, lambda db_url: challenge(tmp_path, scenes, db_url)) as served:
        yield served


def test_upload_is_scored_and_ranked(served, scenes, tmp_path):
    arena, url = served
    a, b = team(arena, url), team(arena, url)
    declared = "ab" * 32
    ra = a.submit_dataset("scenes", scenes["target"], seed=1, checksum=declared, method="target grammar")
    rb = b.submit_dataset("scenes", scenes["prior"], seed=0)
    assert ra["n_pairs"] == 10 and len(ra["sha256"]) == 64 and ra["state"] == "queued"
    ja, jb = wait_scored(a, ra["job_id"]), wait_scored(b, rb["job_id"])
    assert "artefacts" not in ja["result"] and ja["progress"]["step"] == ja["progress"]["total"] == 8
    board = a.track_leaderboard("scenes")
    rows = {r["team"]: r for r in board["rows"]}
    assert set(rows) == {a.username, b.username}
    assert rows[a.username]["miou"] == pytest.approx(ja["result"]["miou"])
    assert rows[a.username]["server_checksum"] == ja["result"]["model_sha256"]
    assert rows[a.username]["declared_checksum"] == declared  # both checksums are shown
    for r in board["rows"]:  # every score carries its 95 % interval; ranks are rank groups
        assert r["miou_low"] <= r["miou"] <= r["miou_high"] and r["seeds"] == 1
        assert r["rank"] == 1 + sum(o["miou_low"] > r["miou_high"] for o in board["rows"])
    assert board["rows"][0]["rank"] == 1
    widths = sorted(r["miou_high"] - r["miou_low"] for r in board["rows"])
    assert board["resolution"] == pytest.approx(widths[len(widths) // 2])
    assert rows[b.username]["miou"] == pytest.approx(jb["result"]["miou"])
    assert board["rows"][0]["miou"] >= board["rows"][1]["miou"]
    mine = a.dataset_submissions("scenes")
    assert mine[0]["per_class_iou"]["background"] is not None and mine[0]["method"] == "target grammar"
    # the overlays (on the team's own images) are the team's only
    png = httpx.get(f"{url}/api/tracks/scenes/submissions/{ra['submission_id']}/overlays.png",
                    headers={"authorization": f"Bearer {a.token}"})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    other = httpx.get(f"{url}/api/tracks/scenes/submissions/{ra['submission_id']}/overlays.png",
                      headers={"authorization": f"Bearer {b.token}"})
    assert other.status_code == 404
    page = httpx.get(f"{url}/tracks/scenes", headers={"accept": "text/html"}).text
    assert a.username in page and declared[:12] in page
    assert f"[{rows[a.username]['miou_low']:.4f}, {rows[a.username]['miou_high']:.4f}]" in page
    assert "95 % interval" in arena.export_results()
    assert "scenes" in arena.export_results() and f"{ja['result']['miou']}" in arena.export_results()
    # the private test set is never served in the scored protocol
    assert httpx.get(f"{url}/api/tracks/scenes/test-set.zip").status_code == 403


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _voc_zip(pairs: list[tuple[str, np.ndarray, np.ndarray]], tmp: Path) -> bytes:
    root = tmp / f"voc{uuid.uuid4().hex[:6]}"
    make_voc_dirs(root)
    for name, img, mask in pairs:
        write_pair(root, name, img, mask)
    return _zip({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})


def test_every_bad_upload_is_refused_and_costs_nothing(tmp_path, scenes):
    arena = Arena(challenge(tmp_path, scenes))
    arena.start(progress=False)
    img, mask = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    bad_mask = mask.copy()
    bad_mask[0, 0] = 77
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tf:
        link = tarfile.TarInfo("JPEGImages/a.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("JPEGImages/big.jpg", b"\0" * (6 << 20))  # 6 MB of zeros, ~6 KB packed
    many = {f"JPEGImages/{i}.jpg": b"x" for i in range(201)}
    npz = io.BytesIO()
    np.savez_compressed(npz, images=np.zeros((10_001, 8, 8), np.uint8), masks=np.zeros((10_001, 8, 8), np.uint8))
    cases = [
        ("not an archive", ("data.zip", b"just text"), 422, "is not an archive"),
        ("path traversal", ("d.zip", _zip({"../evil.png": b"x"})), 422, "climbs out"),
        ("absolute path", ("d.zip", _zip({"/etc/cron.d/x": b"x"})), 422, "absolute path"),
        ("a link (zip)", ("d.zip", _zip({"JPEGImages/a.jpg": b"x"}, symlink="SegmentationClass/a.png")), 422, "link"),
        ("a link (tar)", ("d.tar", tar_buf.getvalue()), 422, "link"),
        ("too large", ("d.zip", b"PK" + os.urandom(3 << 20)), 413, "larger than"),
        ("too many files", ("d.zip", _zip(many)), 422, "entries, the limit is 200"),
        ("zip bomb", ("d.zip", bomb.getvalue()), 422, "unpacks to more than"),
        ("513x512 image", ("d.zip", _voc_zip([("a", np.zeros((512, 513), np.uint8), np.zeros((512, 513), np.uint8))],
                                             tmp_path)), 422, None),
        ("mask value 77", ("d.zip", _voc_zip([("a", img, bad_mask)], tmp_path)), 422, None),
        ("10,001 pairs", ("d.npz", npz.getvalue()), 422, None),
    ]
    with BackgroundServer(arena) as url:
        c = team(arena, url)
        auth = {"authorization": f"Bearer {c.token}"}
        for what, (name, body), status, needle in cases:
            track = "voc" if what in ("10,001 pairs", "513x512 image") else "scenes"  # voc: SyntaGen's 512x512 rule
            fields = {"seed": "1", "checksum": "0" * 64}
            r = httpx.post(f"{url}/api/tracks/{track}/submissions", files={"file": (name, body)}, data=fields,
                           headers=auth, timeout=60)
            assert r.status_code == status, (what, r.text[:300])
            body_json = r.json()
            if needle:
                assert needle in body_json["detail"], (what, body_json)
            else:
                assert "breaks the track's rules" in body_json["detail"], (what, body_json)
                listed = " ".join(body_json["problems"])
                expect = {"513x512 image": "is 513x512 (WxH), must be 512x512", "mask value 77": "values [77]",
                          "10,001 pairs": "10001 pairs, the limit is 10000"}[what]
                assert expect in listed, (what, listed)
        wrong_type = httpx.post(f"{url}/api/tracks/scenes/submissions", json={"file": "x"}, headers=auth)
        assert wrong_type.status_code == 415 and "multipart/form-data" in wrong_type.json()["detail"]
        # every offending file is listed, not only the first
        three = _voc_zip([(n, img, bad_mask) for n in ("a", "b", "c")], tmp_path)
        r = httpx.post(f"{url}/api/tracks/scenes/submissions", files={"file": ("d.zip", three)}, headers=auth)
        assert r.json()["n_problems"] == 3 and len(r.json()["problems"]) == 3
        # nothing was counted or queued: the team still has its whole allowance
        assert c.dataset_submissions("scenes") == [] and arena.jobs.list() == []
        assert not list((arena.tracks["scenes"].root / "staging").iterdir())  # no half-unpacked leftovers
        ok = c.submit_dataset("scenes", scenes["prior"])
        assert ok["submission_id"] >= 1 and c.dataset_submissions("scenes")[0]["slot"] == 1
    arena.engine.dispose()


def test_quotas_refuse_without_using_a_submission(tmp_path, scenes):
    arena = Arena(challenge(tmp_path, scenes))
    arena.start(progress=False)
    with BackgroundServer(arena) as url:
        c = team(arena, url)
        unvalidated = team(arena, url, validated=False)
        with pytest.raises(ArenaError) as err:
            unvalidated.submit_dataset("scenes", scenes["prior"])
        assert err.value.status == 403
        for _ in range(2):
            wait_scored(c, c.submit_dataset("scenes", scenes["prior"])["job_id"])
        r = httpx.post(f"{url}/api/tracks/scenes/submissions", headers={"authorization": f"Bearer {c.token}"},
                       files={"file": ("d.zip", _zip({"x": b"y"}))})
        assert r.status_code == 429 and "in the last 24 h" in r.json()["detail"] and int(r.headers["Retry-After"]) > 0
        arena.tracks["scenes"].spec.submissions_per_day = 10
        arena.tracks["scenes"].spec.submissions_per_phase = 2
        with pytest.raises(ArenaError) as err:
            c.submit_dataset("scenes", scenes["prior"])
        assert err.value.status == 409 and "2 of 2" in str(err.value)
        assert len(c.dataset_submissions("scenes")) == 2
    arena.engine.dispose()


def test_syntagen_two_deadlines(tmp_path, scenes):
    arena = Arena(challenge(tmp_path, scenes))
    arena.start(progress=False)
    rng = np.random.default_rng(1)
    voc = tmp_path / "voc"
    make_voc_dirs(voc)
    for i in range(2):
        m = np.zeros((512, 512), np.uint8)
        m[100:300, 100:300] = 15  # a person
        write_pair(voc, f"p{i}", rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), m)
    with BackgroundServer(arena) as url:
        c = team(arena, url)
        with pytest.raises(ArenaError) as err:
            c.submit_dataset("voc", voc, seed=7)
        assert err.value.status == 422 and "checksum" in str(err.value)
        assert httpx.get(f"{url}/api/tracks/voc/test-set.zip").status_code == 403  # before deadline 1
        mine = "cd" * 32
        res = c.submit_dataset("voc", voc, seed=7, checksum=mine)
        job = wait_scored(c, res["job_id"])
        spec = arena.tracks["voc"].spec
        spec.deadline1 = datetime.utcnow() - timedelta(minutes=1)  # deadline 1 passes
        with pytest.raises(ArenaError) as err:
            c.submit_dataset("voc", voc, seed=7, checksum=mine)
        assert err.value.status == 403 and "deadline 1" in str(err.value)
        z = httpx.get(f"{url}/api/tracks/voc/test-set.zip")
        assert z.status_code == 200 and "test-set/JPEGImages/t0.jpg" in zipfile.ZipFile(io.BytesIO(z.content)).namelist()
        claim = httpx.post(f"{url}/api/tracks/voc/submissions/{res['submission_id']}/claim",
                           headers={"authorization": f"Bearer {c.token}"}, data={"score": "0.42"},
                           files={"code": ("code.zip", _zip({"make_data.py": b"print('sd')"}))})
        assert claim.status_code == 200, claim.text
        row = c.track_leaderboard("voc")["rows"][0]
        assert row["claimed_score"] == 0.42 and row["miou"] == pytest.approx(job["result"]["miou"])
        assert row["declared_checksum"] == mine and row["server_checksum"] == job["result"]["model_sha256"]
        spec.deadline2 = datetime.utcnow() - timedelta(seconds=1)
        late = httpx.post(f"{url}/api/tracks/voc/submissions/{res['submission_id']}/claim",
                          headers={"authorization": f"Bearer {c.token}"}, data={"score": "0.9"},
                          files={"code": ("code.zip", b"PK")})
        assert late.status_code == 403
    arena.engine.dispose()


def test_verification_reruns_and_regenerates(tmp_path, scenes):
    arena = Arena(challenge(tmp_path, scenes))
    arena.start(progress=False)
    with BackgroundServer(arena) as url:
        c = team(arena, url)
        res = c.submit_dataset("scenes", scenes["prior"], seed=0)
        wait_scored(c, res["job_id"])
        env = {**os.environ, "DATARENA_DATABASE_URL": arena.url, "DATARENA_BROKER_URL": ""}
        import yaml

        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(arena.spec.model_dump(mode="json")))
        out = subprocess.run([sys.executable, "-m", "datarena.cli", "admin", "verify", str(res["submission_id"]),
                              "--challenge", str(cfg)], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        job_id = int(out.stdout.split("verification job ")[1].split()[0])
        deadline = time.time() + 300
        while arena.jobs.get(job_id).state not in ("finished", "failed") and time.time() < deadline:
            time.sleep(0.3)
        v = arena.jobs.get(job_id).as_json()["result"]
        assert v["status"] == "pass" and "identical" in v["rule"] and v["regeneration"]["status"] == "identical"
        row = c.track_leaderboard("scenes")["rows"][0]
        assert row["verification"]["status"] == "pass"
        assert "reproduced" in httpx.get(f"{url}/tracks/scenes", headers={"accept": "text/html"}).text
    arena.engine.dispose()


def test_celery_worker_scores_an_upload(tmp_path, scenes):
    if not _port_open("127.0.0.1", 6379):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    prefix = f"ds{uuid.uuid4().hex[:8]}"
    arena = Arena(challenge(tmp_path, scenes, broker_url=REDIS, queue_prefix=prefix))
    arena.start(progress=False)
    worker = subprocess.Popen([sys.executable, "-m", "datarena.cli", "worker", "--broker", REDIS,
                               "--database-url", arena.url, "--prefix", prefix, "--lease-s", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        with BackgroundServer(arena) as url:
            assert httpx.get(f"{url}/api/health").json()["jobs"] == "celery"
            c = team(arena, url)
            job = wait_scored(c, c.submit_dataset("scenes", scenes["target"])["job_id"])
            assert arena.jobs.get(job["id"]).last_worker.split(":")[1] == str(worker.pid)
            assert c.track_leaderboard("scenes")["rows"][0]["team"] == c.username
    finally:
        os.killpg(worker.pid, 9)
        arena.engine.dispose()


def test_split_test_set_serves_no_private_score_until_the_close(tmp_path, scenes):
    """Several submissions per phase: scores shown during the phase come from the public part of the
    test set; nothing served carries a private-part score; at the close each team's selected entry
    (or its best public one) is ranked on the private part."""
    import json

    from sqlalchemy import update

    from datarena.challenge.models import Phase

    arena = Arena(challenge(tmp_path, scenes))
    arena.start(progress=False)
    track = arena.tracks["scenes"]
    assert track.split and 0 < len(track.public_indices()) < 6
    with BackgroundServer(arena) as url:
        a, b = team(arena, url), team(arena, url)
        first = a.submit_dataset("scenes", scenes["prior"], seed=0)
        second = a.submit_dataset("scenes", scenes["target"], seed=1)
        other = b.submit_dataset("scenes", scenes["target"], seed=1)
        jobs = {r["job_id"]: wait_scored(c, r["job_id"]) for c, r in ((a, first), (a, second), (b, other))}
        sel = httpx.post(f"{url}/api/tracks/scenes/submissions/{first['submission_id']}/select",
                         headers={"authorization": f"Bearer {a.token}"})
        assert sel.status_code == 200, sel.text
        theirs = httpx.post(f"{url}/api/tracks/scenes/submissions/{other['submission_id']}/select",
                            headers={"authorization": f"Bearer {a.token}"})
        assert theirs.status_code == 404  # only a team's own entry
        private = {r["submission_id"]: json.loads((track.root / "submissions" / str(r["submission_id"]) / "score" /
                                                   "private.json").read_text()) for r in (first, second, other)}
        for j in jobs.values():
            assert j["result"]["test_part"] == "public" and j["result"]["n_test_images"] < 6
        # everything a team or a visitor can read while the phase is open
        served = [httpx.get(f"{url}/api/jobs/{jid}", headers={"authorization": f"Bearer {c.token}"}).text
                  for c, jid in ((a, first["job_id"]), (a, second["job_id"]), (b, other["job_id"]))]
        served += [httpx.get(f"{url}/api/tracks/scenes/submissions", headers={"authorization": f"Bearer {c.token}"}).text
                   for c in (a, b)]
        served += [httpx.get(f"{url}/api/tracks/scenes/leaderboard").text, httpx.get(f"{url}/api/tracks/scenes").text,
                   httpx.get(f"{url}/tracks/scenes", headers={"accept": "text/html"}).text,
                   httpx.get(f"{url}/api/tracks").text]
        for p in private.values():
            for value in (p["miou"], p["miou_low"], p["miou_high"]):
                for text in (repr(value), f"{value:.4f}", f"{value:.3f}"):
                    if text in ("0.0000", "0.000", "0.0"):
                        continue
                    # the number as a token: not a piece of another (10.041 s, 0.0412, a timestamp)
                    token = re.compile(rf"(?<![\d.]){re.escape(text)}(?!\d)")
                    assert not any(token.search(page) for page in served), text
        assert httpx.get(f"{url}/api/tracks/scenes/leaderboard").json()["test_part"] == "public"
        # the phase closes: the final board ranks the selected entries on the private part
        with arena.Session() as s:
            s.execute(update(Phase).values(ends_at=datetime.utcnow() - timedelta(seconds=1)))
            s.commit()
        arena._phase = None
        final = httpx.get(f"{url}/api/tracks/scenes/leaderboard").json()
        assert final["test_part"] == "private"
        rows = {r["team"]: r for r in final["rows"]}
        assert rows[a.username]["id"] == first["submission_id"]  # the selected one, not necessarily the best
        assert rows[a.username]["miou"] == pytest.approx(private[first["submission_id"]]["miou"])
        assert rows[b.username]["miou"] == pytest.approx(private[other["submission_id"]]["miou"])
        assert rows[a.username]["public_miou"] == pytest.approx(jobs[first["job_id"]]["result"]["miou"])
    arena.engine.dispose()
