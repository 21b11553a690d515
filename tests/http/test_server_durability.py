"""A server killed mid-load loses no acknowledged reveal or submission; organiser CLI."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import yaml

from datarena.challenge.arena import Arena
from datarena.challenge.spec import load_challenge
from datarena.errors import Unauthorized
from datarena.http.runner import free_port
from tests.conftest import SERVER_EXERCISES, install_phase_cache

PASSWORD = "correct horse battery"


def write_challenge(tmp_path, phase_data_cache):
    install_phase_cache(phase_data_cache, tmp_path / "data")
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump({
        "title": "durability", "data_dir": "data", "exercises": [{"id": e} for e in SERVER_EXERCISES],
        "argon2_time_cost": 1, "argon2_memory_kib": 8192, "login_failures_allowed": 1000,
    }))
    return path


def start_server(challenge, port):
    proc = subprocess.Popen([sys.executable, "-m", "datarena.cli", "serve", "--challenge", str(challenge), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "DATARENA_DATABASE_URL": ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(proc.stderr.read().decode()[-2000:])


def test_kill_mid_load_loses_nothing_acknowledged(tmp_path, phase_data_cache):
    challenge = write_challenge(tmp_path, phase_data_cache)
    arena = Arena(load_challenge(challenge))
    arena.start(progress=False)
    y = {e: arena.labels.exercise(arena.phases()[-1], e).hidden()[0] for e in SERVER_EXERCISES}
    teams = [f"team{i}" for i in range(12)]
    for t in teams:
        arena.register(t, PASSWORD)
        arena.validate_team(t)
    tokens = {t: arena.issue_token(arena.login(t, PASSWORD)) for t in teams}
    arena.engine.dispose()

    port = free_port()
    proc, url = start_server(challenge, port)
    acked_reveals, acked_subs = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(t):
        rng = np.random.default_rng(abs(hash(t)) % 2**32)
        with httpx.Client(base_url=url, timeout=5, headers={"Authorization": f"Bearer {tokens[t]}"}) as http:
            for ex in SERVER_EXERCISES:
                for _ in range(6):
                    if stop.is_set():
                        return
                    d = int(rng.integers(0, len(y[ex])))
                    try:
                        r = http.post(f"/api/exercises/{ex}/reveal", json={"datum_id": d})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        with lock:
                            acked_reveals.append((t, ex, d, r.json()["label"]))
                body = ("\n".join(map(str, y[ex].tolist())) + "\n").encode()
                try:
                    r = http.post(f"/api/exercises/{ex}/submission", content=body, headers={"Content-Type": "text/csv"})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked_subs.append((t, ex))

    with cf.ThreadPoolExecutor(len(teams)) as pool:
        futures = [pool.submit(worker, t) for t in teams]
        deadline = time.time() + 20
        while len(acked_reveals) < 40 and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-load, no graceful shutdown
        proc.wait()
        stop.set()
        for f in futures:
            f.result()
    assert len(acked_reveals) >= 40

    proc, url = start_server(challenge, port)
    try:
        for t, ex, d, label in acked_reveals:
            r = httpx.get(f"{url}/api/exercises/{ex}/reveals", headers={"Authorization": f"Bearer {tokens[t]}"})
            stored = {x["datum_id"]: x["label"] for x in r.json()["reveals"]}
            assert stored.get(d) == label, (t, ex, d)
            assert len(stored) <= 5
        board = httpx.get(f"{url}/api/leaderboard").json()
        cells = {r["team"]: r["exercises"] for r in board["rows"]}
        for t, ex in acked_subs:
            assert cells[t][ex]["submitted"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_admin_cli(tmp_path, phase_data_cache):
    challenge = write_challenge(tmp_path, phase_data_cache)
    arena = Arena(load_challenge(challenge))
    arena.start(progress=False)
    arena.register("cli_team", PASSWORD)
    token_team = arena.login("cli_team", PASSWORD)
    cli = [sys.executable, "-m", "datarena.cli", "admin"]
    env = {**os.environ, "COLUMNS": "200", "DATARENA_DATABASE_URL": ""}

    def run(*args):
        return subprocess.run([*cli, *args, "--challenge", str(challenge)], capture_output=True, text=True, env=env, timeout=300)

    out = run("list-teams")
    assert out.returncode == 0 and "cli_team" in out.stdout and "pending" in out.stdout
    bad = run("validate-team", "ghost")
    assert bad.returncode == 2 and "no team named 'ghost'" in bad.stderr
    assert run("validate-team", "cli_team").returncode == 0
    assert "validated" in run("list-teams").stdout
    token = arena.issue_token(arena.login("cli_team", PASSWORD))
    assert arena.team_for_token(token).name == "cli_team"
    revoked = run("revoke-tokens", "CLI_TEAM")  # names are matched case-insensitively
    assert revoked.returncode == 0 and "1 token(s)" in revoked.stdout, revoked.stderr
    arena._tokens.clear()
    with pytest.raises(Unauthorized):
        arena.team_for_token(token)
    y = arena.labels.exercise(arena.phases()[-1], "00").hidden()[0]
    arena.validate_team("cli_team")  # refresh object state
    arena.labels.submit(arena.login("cli_team", PASSWORD), "00", ("\n".join(map(str, y)) + "\n").encode())
    export = run("export-results", "--out", str(tmp_path / "res.csv"))
    assert export.returncode == 0
    text = (tmp_path / "res.csv").read_text().splitlines()
    assert text[0].startswith("phase,commitment,secret,track,team,item,attempt,score") and "cli_team" in text[1] and ",1.0," in text[1]
    phase = run("new-phase", "--seed", "9")
    assert phase.returncode == 0, phase.stderr
    phases = arena.phases()
    assert [p.seed for p in phases] == [42, 9] and token_team.name == "cli_team"
    assert (tmp_path / "data" / "phase-2" / "public" / "00_toy_dataset" / "X_val.npy").exists()
