"""Secret phase seeds: the server secret, the commitment, reveal-seed and verify-phase end to end."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
import zipfile
from datetime import timedelta

import httpx
import numpy as np
import pytest
import yaml

from datarena.challenge import phases
from datarena.challenge.arena import Arena
from datarena.challenge.models import Phase, utcnow
from datarena.challenge.spec import load_challenge
from datarena.errors import DatarenaError
from datarena.http.runner import BackgroundServer
from tests.conftest import SERVER_EXERCISES, install_phase_cache


def test_server_secret_is_created_owner_only_and_kept(tmp_path):
    path = tmp_path / "data" / "server-secret"
    first = phases.load_or_create_server_secret(path)
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert phases.load_or_create_server_secret(path) == first  # kept across restarts
    s1 = phases.phase_secret(first, 1, 42)
    assert s1 != phases.phase_secret(first, 2, 42) != phases.phase_secret(first, 1, 43)
    assert phases.commitment(s1) != s1 and len(phases.commitment(s1)) == 64
    assert phases.generation_seed(s1) == int(s1, 16)
    path.write_text("not hex\n")
    with pytest.raises(DatarenaError, match="64 hex digits"):
        phases.load_or_create_server_secret(path)


def test_fresh_server_generates_from_its_own_secret(tmp_path):
    from tests.conftest import fast_challenge

    arena = Arena(fast_challenge(tmp_path, exercises=[{"id": "00"}]))
    phase = arena.start(progress=False)
    secret = phases.phase_secret(arena.server_secret(), 1, 42)
    assert phase.commitment == phases.commitment(secret)
    meta = (tmp_path / "phase-1" / "public" / "00_toy_dataset" / "meta.json").read_text()
    assert phase.commitment in meta and "seed" not in yaml.safe_load(meta)
    # the public seed 42 alone does not give the served data
    from datarena.underspec.exercises import generate_exercise
    from datarena.underspec.suite import load_suite

    served = np.load(tmp_path / "phase-1" / "public" / "00_toy_dataset" / "X_val.npy")
    assert not np.array_equal(generate_exercise(load_suite().get("00"), 42).X_target, served)
    assert np.array_equal(generate_exercise(load_suite().get("00"), phases.generation_seed(secret)).X_target, served)
    arena.engine.dispose()


def write_challenge(tmp_path, phase_data_cache):
    install_phase_cache(phase_data_cache, tmp_path / "data")
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump({
        "title": "verify", "data_dir": "data", "exercises": [{"id": e} for e in SERVER_EXERCISES],
        "argon2_time_cost": 1, "argon2_memory_kib": 8192,
    }))
    return path


def test_reveal_seed_and_verify_phase_end_to_end(tmp_path, phase_data_cache):
    challenge = write_challenge(tmp_path, phase_data_cache)
    arena = Arena(load_challenge(challenge))
    arena.start(progress=False)
    env = {**os.environ, "COLUMNS": "200", "DATARENA_DATABASE_URL": ""}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "datarena.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    downloads = tmp_path / "downloads"
    with BackgroundServer(arena) as url:
        shown = httpx.get(f"{url}/api/phases/1").json()
        assert shown["secret"] is None and "seed" not in shown and len(shown["commitment"]) == 64
        assert httpx.get(f"{url}/api/phases/1/verification").status_code == 403
        for ex in SERVER_EXERCISES:  # a participant keeps what they downloaded
            zipfile.ZipFile(io.BytesIO(httpx.get(f"{url}/api/exercises/{ex}/download.zip").content)).extractall(downloads)

        refused = cli("admin", "reveal-seed", "1", "--challenge", str(challenge))
        assert refused.returncode != 0 and "still open" in refused.stderr and "new-phase" in refused.stderr
        assert httpx.get(f"{url}/api/phases/1").json()["secret"] is None

        arena.register("verifier", "correct horse battery")
        arena.validate_team("verifier")
        y = arena.labels.exercise(arena.phases()[0], "00").hidden()[0]
        arena.labels.submit(arena.login("verifier", "correct horse battery"), "00", ("\n".join(map(str, y)) + "\n").encode())
        assert shown["commitment"] in arena.export_results()
        with arena.Session() as s:  # the phase closes
            s.get(Phase, 1).ends_at = utcnow() - timedelta(minutes=1)
            s.commit()
        out = cli("admin", "reveal-seed", "1", "--challenge", str(challenge))
        assert out.returncode == 0, out.stderr
        revealed = httpx.get(f"{url}/api/phases/1").json()
        assert revealed["commitment"] == shown["commitment"]
        assert revealed["secret"] in out.stdout
        assert phases.commitment(revealed["secret"]) == shown["commitment"]
        time.sleep(phases.PHASE_CACHE_S + 0.1)  # the server sees another process's change within this delay
        assert revealed["secret"] in httpx.get(f"{url}/", headers={"accept": "text/html"}).text
        assert revealed["secret"] in arena.export_results()

        ok = cli("verify-phase", url, "--phase", "1", "--downloads", str(downloads), "--work-dir", str(tmp_path / "w"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "verified" in ok.stdout and "MISMATCH" not in ok.stdout
        # the regenerated hidden labels are the server's, byte for byte
        regen = np.load(tmp_path / "w" / "regenerated" / "private" / "01_mnist_cc" / "y_val.npy")
        assert np.array_equal(regen, arena.labels.exercise(arena.phases()[0], "01").hidden()[0])

        # a file that differs from what the secret gives is caught
        bad = downloads / "04_mnist_uniform_color_random_row" / "X_val.npy"
        X = np.load(bad)
        X[0, 0, 0, 0] += 1.0
        np.save(bad, X)
        caught = cli("verify-phase", url, "--phase", "1", "--downloads", str(downloads))
        assert caught.returncode != 0 and "MISMATCH" in caught.stdout and "does not match" in caught.stderr
    arena.engine.dispose()
