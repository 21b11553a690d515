"""What an attack costs the server, measured: refused-upload soak, hostile uploads, API fuzzing.

Serves a challenge in this process (a labels track and a dataset track; SQLite, or the database
that --database-url names) and prints:

* soak: N refused uploads in a row (bad archives, an unvalidated team, spools over 1 MB): growth
  of open files, deleted-but-open files and the staging directory; ms per upload;
* hostile uploads, one at a time: status, seconds, peak traced memory (Python and numpy
  allocations, all threads) and peak RSS growth (VmHWM, reset before each) while it was refused;
* fuzzing: the OpenAPI operations fuzzed anonymously and as a team: cases sent, 5xx seen,
  failed schemathesis checks.

    .venv/bin/python benchmarks/bench_hardening.py [--soak 500] [--examples 25]
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from datarena.challenge.arena import Arena
from datarena.challenge.spec import ChallengeSpec
from datarena.client import ArenaClient
from datarena.data.segmentation import make_voc_dirs, write_pair
from datarena.http.runner import BackgroundServer
from datarena.testing import hostile
from datarena.testing.fuzz import fuzz_api

PASSWORD = "correct horse battery"


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def challenge(root: Path, db_url: str | None) -> ChallengeSpec:
    test_set = root / "test-set"
    make_voc_dirs(test_set)
    write_pair(test_set, "t0", np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8))
    return ChallengeSpec.model_validate(dict(
        title="hardening bench", exercises=[{"id": "01"}], data_dir=str(root / "data"),
        database_url=db_url or f"sqlite:///{root / 'arena.db'}", argon2_time_cost=1, argon2_memory_kib=8192,
        login_failures_allowed=100_000, reveal_budget=1000,
        tracks=[{"id": "labels", "kind": "labels"},
                {"id": "voc", "kind": "dataset", "classes": "voc", "budget": "syntagen", "test_set": str(test_set),
                 "max_upload_mb": 64, "max_unpacked_mb": 256, "max_files": 2000, "submissions_per_day": 100}]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak", type=int, default=500, help="refused uploads in a row")
    ap.add_argument("--examples", type=int, default=25, help="fuzzed requests per operation, mode and identity")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--pairs", type=int, default=200, help="pairs per upload in the reveal-latency check")
    ap.add_argument("--uploaders", type=int, default=4, help="concurrent uploading clients")
    args = ap.parse_args()
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # the fuzzer's bad headers, logged

    root = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    arena = Arena(challenge(root, args.database_url))
    arena.start(progress=False)
    with BackgroundServer(arena) as url, httpx.Client(base_url=url, timeout=120) as http:
        def team(validated=True) -> ArenaClient:
            c = ArenaClient(url, f"b{uuid.uuid4().hex[:10]}", PASSWORD)
            c.register()
            if validated:
                arena.validate_team(c.username)
            return c

        ok, unvalidated = team(), team(False)
        staging = arena.tracks["voc"].root / "staging"

        def upload(c, name, body):
            return http.post("/api/tracks/voc/submissions", files={"file": (name, body)},
                             headers={"authorization": f"Bearer {c.token}"})

        # ---- soak
        bodies = [("d.zip", b"not an archive" * 100), ("d.zip", hostile.zip_of({"../x": b"1"})),
                  ("d.npz", b"PK\x05\x06" + b"\0" * 18), ("d.zip", b"PK" + b"\0" * (1200 << 10))]
        statuses: dict[int, int] = {}

        def send(i):
            r = upload(unvalidated if i % 5 == 4 else ok, *bodies[i % len(bodies)])
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        for i in range(100):
            send(i)

        def probe():
            gc.collect()
            fds = hostile.fd_targets()
            return sum(t.startswith("/") for t in fds), hostile.deleted_open_files(), hostile.tree_bytes(staging)

        marks = [probe()]
        for window in range(2):  # two windows: a leak grows in both, a pool that fills up in the first only
            statuses.clear()
            t0 = time.perf_counter()
            for i in range(args.soak):
                send(i)
            dt = time.perf_counter() - t0
            marks.append(probe())
            (f0, d0, s0), (f1, d1, s1) = marks[-2], marks[-1]
            print(f"soak window {window + 1}: {args.soak} refused uploads (statuses {dict(sorted(statuses.items()))}), "
                  f"{1000 * dt / args.soak:.1f} ms each; open files {f0} -> {f1} (growth {f1 - f0}), "
                  f"deleted-but-open {d0} -> {d1}, staging bytes {s0} -> {s1}")
        before, after = marks[1], marks[2]

        # ---- hostile uploads, one at a time
        cases = {
            "npz declaring 600 MB (130 KB)": ("d.npz", hostile.npz_declaring((640, 512, 640, 3), (640, 512, 640))),
            "12000x12000 PNG mask (140 KB)": ("d.zip", hostile.zip_of({
                "JPEGImages/a.jpg": b"\xff\xd8", "SegmentationClass/a.png": hostile.png_declaring(12000, 12000)})),
            "zip bomb, 300 MB of zeros": ("d.zip", hostile.zip_of({"JPEGImages/a.jpg": b"\0" * (300 << 20)})),
            "3000 entries": ("d.zip", hostile.zip_of({f"JPEGImages/{i}.jpg": b"x" for i in range(3000)})),
            "tar name with NUL": ("d.tar", hostile.tar_with_name("JPEGImages/a\0b.jpg", pax=True)),
            "zip name, invalid UTF-8": ("d.zip", hostile.zip_with_raw_name(b"JPEGImages/a\xff.jpg")),
        }
        print(f"\n{'hostile upload':34s} {'status':>6s} {'seconds':>8s} {'traced peak MB':>15s} {'RSS peak +MB':>13s}")
        worst = 0.0
        for what, (name, body) in cases.items():
            gc.collect()
            can_reset = reset_hwm()
            hwm0 = vm_hwm_kib()
            tracemalloc.start()
            t0 = time.perf_counter()
            r = upload(ok, name, body)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            rss = (vm_hwm_kib() - hwm0) / 1024 if can_reset else float("nan")
            worst = max(worst, peak)
            print(f"{what:34s} {r.status_code:6d} {dt:8.2f} {peak:15.1f} {rss:13.1f}")
        print(f"  worst traced peak per refused upload: {worst:.1f} MB "
              f"(the bodies themselves are in memory on the client side of this process too)")

        # ---- reveals while uploads are being checked (the upload pool keeps them apart)
        rng = np.random.default_rng(0)
        pairs = {}
        for i in range(args.pairs):
            img = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(img, "JPEG", quality=90)
            mask = np.zeros((512, 512), np.uint8)
            mask[100:300, 50:250] = 15 if i < args.pairs - 1 else 99  # the last mask breaks the rules
            m = io.BytesIO()
            Image.fromarray(mask, mode="L").save(m, "PNG")
            pairs[f"JPEGImages/p{i}.jpg"], pairs[f"SegmentationClass/p{i}.png"] = img.getvalue(), m.getvalue()
        heavy = hostile.zip_of(pairs)
        revealer = team()
        revealer.reveal("01", 0)

        def reveal_latencies(n: int) -> list[float]:
            out = []
            with httpx.Client(base_url=url, timeout=120) as h:
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = h.post("/api/exercises/01/reveal", json={"datum_id": 0},
                               headers={"authorization": f"Bearer {revealer.token}"})
                    assert r.status_code == 200, r.text
                    out.append(1000 * (time.perf_counter() - t0))
            return out

        idle = reveal_latencies(200)
        stop = threading.Event()
        checked = []

        def uploader():
            with httpx.Client(base_url=url, timeout=600) as h:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = h.post("/api/tracks/voc/submissions", files={"file": ("d.zip", heavy)},
                               headers={"authorization": f"Bearer {ok.token}"})
                    checked.append((r.status_code, time.perf_counter() - t0))

        threads = [threading.Thread(target=uploader) for _ in range(args.uploaders)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        busy = reveal_latencies(200)
        stop.set()
        for t in threads:
            t.join()
        p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
        print(f"\nreveals while {args.uploaders} clients upload {len(heavy) >> 20} MB zips of {args.pairs} 512x512 "
              f"pairs (each fully checked, then refused: {sorted({c for c, _ in checked})}, "
              f"{np.mean([d for _, d in checked]):.1f} s each)")
        print(f"  idle: p50 {p(idle, 50):.1f} ms, p99 {p(idle, 99):.1f} ms; during uploads: p50 {p(busy, 50):.1f} ms, "
              f"p99 {p(busy, 99):.1f} ms (x{p(busy, 50) / p(idle, 50):.1f} at p50)")

        # ---- fuzzing
        print()
        fuzz_team = team()
        total_cases = total_5xx = total_fail = 0
        for identity, headers in (("anonymous", None),
                                  ("team", lambda: {"Authorization": f"Bearer {fuzz_team.login()}"})):
            t0 = time.perf_counter()
            rep = fuzz_api(url, headers, examples=args.examples)
            total_cases += rep.cases
            total_5xx += rep.server_errors
            total_fail += len(rep.failures)
            print(f"fuzz ({identity}): {len(rep.operations)} operations, {rep.cases} requests, "
                  f"{rep.server_errors} 5xx, {len(rep.failures)} failed checks, {time.perf_counter() - t0:.0f} s; "
                  f"statuses {dict(sorted(rep.statuses.items()))}")
            for f in rep.failures[:5]:
                print("   ", f[:300].replace("\n", " "))
        print(f"fuzz total: {total_cases} requests, {total_5xx} 5xx, {total_fail} failed checks")
    arena.engine.dispose()
    sys.exit(1 if total_5xx or after != before else 0)


if __name__ == "__main__":
    main()
