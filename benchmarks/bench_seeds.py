"""A multi-seed CPU score: its seeds side by side (one process of one thread each) against one after another.

Scores one aerial dataset (400 `aerial_target` renders, seed 7; test: 200 renders, seed 12345, as
bench_scoring.py) under a preset with `seeds` training seeds, twice:

* baseline: the seeds one after another in this process, torch's default thread count (what
  `score_dataset` did before the seeds ran side by side);
* side by side: `score_dataset` with seeds > 1 (datarena.evaluate.parallel).

Prints both wall times and their ratio. With `--queued` it also scores with
DATARENA_SEED_PROCESSES=1 (the same single-thread seeds, one at a time) and checks that every
seed's model checksum equals the side-by-side one's.

Run: .venv/bin/python benchmarks/bench_seeds.py [--preset aerial_scenes] [--seeds 3] [--queued]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="aerial_scenes")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--queued", action="store_true", help="also one seed process at a time (checks the checksums)")
    ap.add_argument("--work", type=Path, default=Path("bench-seeds"))
    a = ap.parse_args()

    import torch

    from datarena.evaluate.train import budget_from, score_dataset
    from datarena.scenes.writers import write_dataset

    data, test = a.work / "target", a.work / "test"
    if not data.exists():
        write_dataset("aerial_target", 400, 7, data, show_progress=False)
    if not test.exists():
        write_dataset("aerial_target", 200, 12345, test, show_progress=False)
    print(f"preset {a.preset}, {a.seeds} seeds; {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    base = [score_dataset(data, test, budget_from(a.preset, seed=k, seeds=1), a.work / f"base{k}", show_progress=False)
            for k in range(a.seeds)]
    t_base = time.perf_counter() - t0
    base_mious = " ".join(f"{r['miou']:.4f}" for r in base)
    print(f"one after another, in process ({torch.get_num_threads()} threads): {t_base:.0f} s; seed mIoU {base_mious}")

    t0 = time.perf_counter()
    side = score_dataset(data, test, budget_from(a.preset, seeds=a.seeds), a.work / "side", show_progress=False)
    t_side = time.perf_counter() - t0
    print(f"side by side (one process of one thread per seed): {t_side:.0f} s; "
          f"seed mIoU {' '.join(f'{m:.4f}' for m in side['seed_mious'])}; mean {side['miou']:.4f} "
          f"[{side['miou_low']:.4f}, {side['miou_high']:.4f}]")
    print(f"side by side / one after another: {t_side / t_base:.2f}x the wall time")

    if a.queued:
        os.environ["DATARENA_SEED_PROCESSES"] = "1"
        t0 = time.perf_counter()
        queued = score_dataset(data, test, budget_from(a.preset, seeds=a.seeds), a.work / "queued", show_progress=False)
        t_q = time.perf_counter() - t0
        same = queued["model_sha256_seeds"] == side["model_sha256_seeds"]
        print(f"one seed process at a time: {t_q:.0f} s ({t_q / t_base:.2f}x); every seed's model checksum equal "
              f"to side by side: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
