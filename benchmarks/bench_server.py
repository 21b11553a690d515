"""Reveal endpoints under concurrent load on loopback, beside a bare FastAPI endpoint.

Run: .venv/bin/python benchmarks/bench_server.py [--seconds 8] [--concurrency 32]
Prints requests/s, p50/p99 latency and the ratio to the bare endpoint; checks that no
team ever exceeds its reveal budget. Goal (issue 3): token path >= 1/3 of bare throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np

PASSWORD = "benchmark password"


async def _worker(host, port, make_request, deadline, latencies, statuses):
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    while time.perf_counter() < deadline:
        raw = make_request(i)
        i += 1
        t0 = time.perf_counter()
        writer.write(raw)
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        code = int(status_line.split()[1])
        statuses[code] = statuses.get(code, 0) + 1
    writer.close()


def load(host, port, make_request, seconds, concurrency):
    latencies, statuses = [], {}

    async def main():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*[
            _worker(host, port, lambda i, w=w: make_request(w, i), deadline, latencies, statuses)
            for w in range(concurrency)
        ])

    t0 = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"rps": len(lat) / elapsed, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "n": len(lat), "statuses": statuses}


def post(path, body: bytes, ctype: str, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


BARE_APP = textwrap.dedent("""
    from fastapi import FastAPI, Request
    app = FastAPI()
    @app.post("/bare")
    async def bare(request: Request):
        payload = await request.json()
        return {"exercise_id": 1, "datum_id": payload["datum_id"], "label": 0, "previously revealed": []}
""")


def start(cmd, port, env=None, cwd=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--teams", type=int, default=40)
    args = ap.parse_args()

    from datarena.challenge.arena import Arena
    from datarena.challenge.spec import ChallengeSpec
    from datarena.http.runner import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    spec = ChallengeSpec(title="bench", exercises=[{"id": "01"}], data_dir=str(tmp))
    arena = Arena(spec)
    arena.start(progress=False)
    teams = [f"bench{i}" for i in range(args.teams)]
    tokens = {}
    for t in teams:
        arena.register(t, PASSWORD)
        arena.validate_team(t)
        tokens[t] = arena.issue_token(arena.login(t, PASSWORD))
    arena.engine.dispose()
    challenge = tmp / "challenge.yaml"
    challenge.write_text(json.dumps({**spec.model_dump(mode="json"), "exercises": [{"id": "01"}]}))
    env = {**os.environ, "DATARENA_DATABASE_URL": ""}

    port = free_port()
    server = start([sys.executable, "-m", "datarena.cli", "serve", "--challenge", str(challenge), "--port", str(port)], port, env)
    bare_dir = tmp / "bare"
    bare_dir.mkdir()
    (bare_dir / "bare_app.py").write_text(BARE_APP)
    bport = free_port()
    bare = start([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(bport), "--log-level", "warning"], bport, cwd=bare_dir)
    rng = np.random.default_rng(0)
    datums = rng.integers(0, 12, size=100_000)

    def token_req(w, i):
        team = teams[(w * 7 + i) % len(teams)]
        body = json.dumps({"datum_id": int(datums[(w * 1000 + i) % len(datums)])}).encode()
        return post("/api/exercises/01/reveal", body, "application/json", f"Authorization: Bearer {tokens[team]}\r\n")

    def form_req(w, i):
        team = teams[(w * 7 + i) % len(teams)]
        body = urllib.parse.urlencode({"username": team, "password": PASSWORD, "exercise_id": 1,
                                       "datum_id": int(datums[(w * 1000 + i) % len(datums)])}).encode()
        return post("/reveal/", body, "application/x-www-form-urlencoded")

    def bare_req(w, i):
        return post("/bare", json.dumps({"datum_id": int(datums[i % len(datums)])}).encode(), "application/json")

    try:
        results = {
            "bare FastAPI endpoint": load("127.0.0.1", bport, bare_req, args.seconds, args.concurrency),
            "token reveal (POST /api/exercises/{id}/reveal)": load("127.0.0.1", port, token_req, args.seconds, args.concurrency),
            "form reveal (POST /reveal/, argon2 per request)": load("127.0.0.1", port, form_req, args.seconds, args.concurrency),
        }
    finally:
        server.terminate()
        bare.terminate()
        server.wait()
        bare.wait()

    arena = Arena(spec)
    from sqlalchemy import func, select

    from datarena.challenge.models import Reveal

    with arena.Session() as s:
        worst = s.scalar(select(func.max(select(func.count(Reveal.id)).group_by(Reveal.team_id, Reveal.exercise_id)
                                        .subquery().c[0]))) or 0
    base = results["bare FastAPI endpoint"]["rps"]
    print(f"concurrency {args.concurrency}, {args.seconds:g} s per endpoint, {args.teams} teams, SQLite WAL, loopback, 1 uvicorn worker")
    print(f"{'endpoint':52s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'x bare':>7s}  statuses")
    for name, r in results.items():
        print(f"{name:52s} {r['rps']:8.0f} {r['p50']:8.1f} {r['p99']:8.1f} {r['rps'] / base:7.2f}  {r['statuses']}")
    print(f"max distinct reveals by one team on one exercise: {worst} (budget {spec.reveal_budget})")
    ratio = results["token reveal (POST /api/exercises/{id}/reveal)"]["rps"] / base
    print(f"token path / bare = {ratio:.2f} (goal >= 0.33): {'met' if ratio >= 1 / 3 else 'NOT met'}")
    if worst > spec.reveal_budget:
        sys.exit("budget exceeded!")


if __name__ == "__main__":
    main()
