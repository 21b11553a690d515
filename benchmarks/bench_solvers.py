"""erm vs divdis vs dbat on every embedded-data exercise, with at most 5 revealed labels.

Run: .venv/bin/python benchmarks/bench_solvers.py [--seeds 0 1 2] [--exercises 01 04] [--no-mix-sweep]
     (in parallel: --shard i/n --json rows_i.json per process, then --merge rows_*.json)
Prints target accuracy, worst-group accuracy, reveals used, the submit/abstain decision
(and whether that decision was right: submitting only pays when accuracy >= default score)
and seconds, per exercise, solver and seed; then the same for mix rates 0.5, 0.1, 0.03 on 01, 04, 06.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from datarena.underspec import score
from datarena.underspec.exercises import generate_exercise
from datarena.underspec.solvers import SOLVERS, LocalOracle, solve
from datarena.underspec.suite import load_suite

RESOLVABLE = {"01", "02", "03", "04", "05", "08"}


def run(spec, seed: int, solvers, mix_rate=None) -> list[dict]:
    if mix_rate is not None:
        spec = spec.model_copy(update={"mix_rate": mix_rate})
    bundle = generate_exercise(spec, seed)
    rows = []
    for s in solvers:
        oracle = LocalOracle(bundle.y_target)
        r = solve(bundle, s, oracle, seed=seed)
        sc = score(bundle, r.labels)
        rows.append({
            "ex": spec.id, "mix": spec.mix_rate, "seed": seed, "solver": s, "acc": sc["accuracy"],
            "wga": sc["worst_group_accuracy"], "reveals": len(oracle.revealed), "est": r.estimated_accuracy,
            "p_beat": r.p_beats_default,
            "submit": bool(r.recommend_submit), "default": spec.default_score, "sec": r.seconds,
        })
        x = rows[-1]
        ok = "ok" if (not x["submit"] or x["acc"] >= x["default"]) else "BAD"
        print(f"{x['ex']:>4s} mix={x['mix']:<5g} seed={seed} {s:7s} acc={x['acc']:.3f} wga={x['wga']:.3f} "
              f"reveals={x['reveals']} est={x['est']:.3f} P(>=default)={x['p_beat']:.2f} {'submit ' if x['submit'] else 'abstain'} {ok} {x['sec']:5.1f}s",
              flush=True)
    return rows


def summarise(rows: list[dict], title: str) -> None:
    print(f"\n## {title}\n")
    print("| ex | mix | solver | acc (mean over seeds) | worst-group | reveals max | submit | wrong submits | s (max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["ex"], r["mix"], r["solver"]) for r in rows}, key=lambda k: (int(k[0]), -k[1], SOLVERS.index(k[2])))
    for ex, mix, s in keys:
        rs = [r for r in rows if (r["ex"], r["mix"], r["solver"]) == (ex, mix, s)]
        bad = sum(r["submit"] and r["acc"] < r["default"] for r in rs)
        print(f"| {ex} | {mix:g} | {s} | {np.mean([r['acc'] for r in rs]):.3f} | {np.mean([r['wga'] for r in rs]):.3f} | "
              f"{max(r['reveals'] for r in rs)} | {sum(r['submit'] for r in rs)}/{len(rs)} | {bad} | {max(r['sec'] for r in rs):.0f} |")


def jobs(suite, ids, seeds, mix_sweep: bool, main_table: bool) -> list[tuple[str, float, int]]:
    """(exercise, mix rate, seed) runs; a sweep run at an exercise's own mix rate is the same run."""
    out = []
    if main_table:
        out += [(i, suite.get(i).mix_rate, s) for i in ids for s in seeds]
    if mix_sweep:
        out += [(i, m, s) for i in ("01", "04", "06") for m in (0.5, 0.1, 0.03) for s in seeds]
    return list(dict.fromkeys(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--exercises", nargs="+", default=None)
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    ap.add_argument("--no-mix-sweep", action="store_true")
    ap.add_argument("--mix-only", action="store_true")
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th job from i (parallel processes)")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    ap.add_argument("--merge", nargs="+", default=None, help="print the tables of row files written with --json")
    args = ap.parse_args()
    suite = load_suite()
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())]
    else:
        ids = args.exercises or [e.id for e in suite.exercises if e.id != "888"]
        i, n = (int(v) for v in args.shard.split("/"))
        todo = jobs(suite, ids, args.seeds, not args.no_mix_sweep, not args.mix_only)[i::n]
        t0 = time.perf_counter()
        rows = []
        for ex, mix, seed in todo:
            rows += run(suite.get(ex), seed, args.solvers, mix_rate=mix)
            if args.json:  # after every job, so an interrupted shard keeps what it finished
                Path(args.json).write_text(json.dumps(rows, default=float))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    suite_mix = {e.id: e.mix_rate for e in suite.exercises}
    main_rows = [r for r in rows if r["mix"] == suite_mix[r["ex"]]]
    if main_rows:
        summarise(main_rows, "every embedded-data exercise (suite mix rates)")
    sweep = [r for r in rows if r["ex"] in ("01", "04", "06")]
    if any(r["mix"] != 0.5 for r in sweep):
        summarise(sweep, "mix-rate sweep")
    bad = [r for r in rows if r["solver"] == "divdis" and r["submit"] and r["acc"] < r["default"]]
    print(f"\nmost reveals used: {max(r['reveals'] for r in rows)}; divdis submissions below the default score: {len(bad)}")


if __name__ == "__main__":
    main()
