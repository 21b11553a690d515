"""Time and peak memory to generate the whole embedded-data hackathon42 suite.

Goal (issue 2): under 30 s on 2 cores.  Run: .venv/bin/python benchmarks/bench_generate.py
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from datarena.data.sources import load_mnist
from datarena.underspec.exercises import SourceConfig
from datarena.underspec.generate import generate_suite
from datarena.underspec.suite import load_suite


def main() -> None:
    t0 = time.perf_counter()
    load_mnist()
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        results = generate_suite(load_suite(), 42, Path(tmp) / "suite", SourceConfig(), progress=False)
        seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = [r for r in results if r.status == "ok"]
    print(f"source load (embedded MNIST):  {t_load:6.2f} s")
    print(f"suite generation ({len(ok)} exercises, {len(results) - len(ok)} skipped): {seconds:6.2f} s  (goal < 30 s)")
    for r in ok:
        print(f"  {r.spec.dirname:40s} {r.seconds:6.2f} s")
    print(f"peak memory (process max RSS, torch + matplotlib included): {rss_mb:7.1f} MiB")


if __name__ == "__main__":
    main()
