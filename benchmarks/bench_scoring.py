"""Does the dataset score resolve dataset quality? The quality ladder through the scoring instrument.

Builds aerial datasets whose order is known by construction (datarena.evaluate.ladder): target
grammar (N renders), the first N/8 of them (reported; no chain), the first S renders and the
first S/8 (the quantity chain, S = 8 by default), the N with 30 % / 60 % of the objects' labels
corrupted, the prior grammar, and a Meta-Sim generator learned from the prior; scores
each with `score_dataset` (the one instrument the dataset track uses) at every training seed;
prints each rung's mean, sigma, 95 % interval and seconds per run, the adjacent separations
in units of the preset's seed sigma, and Spearman's rho of every chain at every seed.

Run: .venv/bin/python benchmarks/bench_scoring.py [--preset aerial_scenes] [--seeds 0 1 2]
     [--n 400] [--small 8] [--test 200] [--workers 2] [--set iterations=150 ...] [--generator generator.pt]
     [--json runs.json];  .venv/bin/python benchmarks/bench_scoring.py --report runs.json [more.json ...]
The pooled sigma is printed with its 95 % bounds (chi-square, rungs x (seeds - 1) degrees of
freedom): from 3 seeds it is itself uncertain by about -25 % / +50 %.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RUNGS = ("target", "target_n8", "small", "small_n8", "corrupt30", "corrupt60", "prior", "learned")


def build(work: Path, n: int, small: int, n_test: int, generator: Path | None) -> dict[str, Path]:
    """Render (once) every rung's dataset and the test set under `work`."""
    from datarena.evaluate.ladder import corrupt_dataset
    from datarena.scenes.writers import write_dataset

    paths = {r: work / r for r in RUNGS} | {"test": work / "test"}

    def render(name, grammar, count, seed):
        if not paths[name].exists():
            write_dataset(grammar, count, seed, paths[name])

    render("test", "aerial_target", n_test, 12345)
    render("target", "aerial_target", n, 7)
    render("target_n8", "aerial_target", n // 8, 7)  # scene i depends on (seed, i) alone: the first N/8 of "target"
    render("small", "aerial_target", small, 7)
    render("small_n8", "aerial_target", max(1, small // 8), 7)
    render("prior", "aerial", n, 7)
    for frac, name in ((0.3, "corrupt30"), (0.6, "corrupt60")):
        if not paths[name].exists():
            corrupt_dataset(paths["target"], paths[name], frac, seed=7)
    if not paths["learned"].exists():
        if generator is None:
            from datarena.metasim.io import shipped_generator

            generator = shipped_generator("aerial_learned")
        if str(generator) == "train":
            from datarena.metasim.aerial import AerialConfig, save_aerial_run, train_aerial

            t0 = time.perf_counter()
            res = train_aerial("aerial", "aerial_target", AerialConfig(seed=0))
            generator = save_aerial_run(res, "aerial", "aerial_target", work / "metasim", force=True) / "generator.pt"
            print(f"trained the Meta-Sim generator (aerial -> aerial_target, seed 0) in {time.perf_counter() - t0:.0f} s")
        from datarena.metasim.io import write_generator_dataset

        write_generator_dataset(generator, n, 7, paths["learned"])
    return paths


def score_one(args: tuple) -> dict:
    rung, seed, data, test, preset, overrides, out, threads = args
    import torch

    torch.set_num_threads(threads)
    from datarena.evaluate.train import budget_from, score_dataset

    budget = budget_from(preset, **{**overrides, "seed": seed, "seeds": 1})
    t0 = time.perf_counter()
    report = score_dataset(data, test, budget, out, show_progress=False, overlays_from="dataset")
    conf = np.load(Path(out) / "confusions.npz")["seed0"]
    return {"rung": rung, "seed": seed, "miou": report["miou"], "seconds": time.perf_counter() - t0,
            "train_seconds": report["train_seconds"], "per_class": report["per_class_iou"], "conf": conf,
            **class_shape(conf.sum(0), list(report["per_class_iou"]), "car")}


def class_shape(conf: np.ndarray, names: list[str], name: str) -> dict:
    """Precision, recall and predicted/true area of one class from a (truth x prediction) confusion
    matrix: an IoU that falls because the network paints the class too large (precision) reads
    unlike one that falls because it misses it (recall)."""
    if name not in names:
        return {}
    k = names.index(name)
    tp, predicted, true = float(conf[k, k]), float(conf[:, k].sum()), float(conf[k].sum())
    return {f"{name}_precision": tp / predicted if predicted else float("nan"),
            f"{name}_recall": tp / true if true else float("nan"),
            f"{name}_area": predicted / true if true else float("nan")}


CAR_SHAPE = ("car_precision", "car_recall", "car_area")


def rows_of(runs: list[dict], rungs: list[str], seeds: list[int]) -> dict:
    """A rung's mean, seed sigma and 95 % interval over `seeds`: with the runs' confusion matrices
    the instrument's interval (seeds and test images); from stored runs without them (--report of
    several files) a t interval over the seeds alone."""
    from scipy.stats import t as student

    from datarena.evaluate.uncertainty import score_interval

    by = {(r["rung"], r["seed"]): r for r in runs}
    rows = {}
    for rung in rungs:
        rs = [by[(rung, s)] for s in seeds]
        mious = np.array([r["miou"] for r in rs])
        std = float(mious.std(ddof=1)) if len(mious) > 1 else 0.0
        if all("conf" in r for r in rs):
            iv = score_interval([r["conf"] for r in rs])
            low, high = iv["miou_low"], iv["miou_high"]
        else:
            half = float(student.ppf(0.975, len(mious) - 1)) * std / np.sqrt(len(mious)) if len(mious) > 1 else 0.0
            low, high = float(mious.mean()) - half, float(mious.mean()) + half
        rows[rung] = {"mean": float(mious.mean()), "std": std, "low": low, "high": high, "seeds": mious.tolist(),
                      "s_per_run": float(np.mean([r["seconds"] for r in rs])),
                      "car": float(np.mean([r["per_class"].get("car", float("nan")) for r in rs])),
                      **{k: float(np.mean([r.get(k, float("nan")) for r in rs])) for k in CAR_SHAPE}}
    return rows


def sigma_bounds(sigma: float, df: int, level: float = 0.95) -> tuple[float, float]:
    """The interval of a pooled standard deviation with `df` degrees of freedom (chi-square): with 3
    seeds a rung adds 2, so 8 rungs give 16 and the bounds are about 0.75 and 1.5 x sigma."""
    from scipy.stats import chi2

    if df < 1 or sigma <= 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return sigma * float(np.sqrt(df / chi2.ppf(1 - tail, df))), sigma * float(np.sqrt(df / chi2.ppf(tail, df)))


def pooled_sigma(stds: list[float]) -> float:
    """The preset's seed sigma: the root mean of the rungs' seed variances."""
    return float(np.sqrt(np.mean(np.square(stds))))


def report(rows: dict, by: dict, seeds: list[int], n: int) -> float:
    """Print the rungs, the pooled seed sigma (with its 95 % bounds), the chains' separations and
    Spearman's rho per seed; returns the pooled sigma."""
    from datarena.evaluate.ladder import CHAINS, spearman

    sigma = pooled_sigma([r["std"] for r in rows.values()])
    df = len(rows) * (len(seeds) - 1)
    lo, hi = sigma_bounds(sigma, df)
    print(f"{'rung':<10} {'mean':>7} {'sigma':>7} {'95% interval':>17} {'car IoU':>8} {'prec':>5} {'recall':>6} "
          f"{'area':>5} {'s/run':>6}   per seed")
    nan = float("nan")
    for rung, r in rows.items():
        print(f"{rung:<10} {r['mean']:7.4f} {r['std']:7.4f}  [{r['low']:.4f}, {r['high']:.4f}] {r['car']:8.3f} "
              f"{r.get('car_precision', nan):5.2f} {r.get('car_recall', nan):6.2f} {r.get('car_area', nan):5.2f} "
              f"{r['s_per_run']:6.1f}   {' '.join(f'{v:.4f}' for v in r['seeds'])}")
    print(f"pooled seed-to-seed sigma of one run: {sigma:.4f} (95 % bounds [{lo:.4f}, {hi:.4f}], {df} degrees of freedom)")
    worst = float("inf")
    rhos = []
    for chain in CHAINS:
        if not all(c in rows for c in chain):
            continue
        for a, b in zip(chain, chain[1:], strict=False):
            gap = rows[a]["mean"] - rows[b]["mean"]
            z = gap / sigma if sigma > 0 else float("inf")
            worst = min(worst, z)
            each = [by[(a, s)]["miou"] - by[(b, s)]["miou"] for s in seeds]
            print(f"  {a} > {b}: gap {gap:+.4f} = {z:+.1f} sigma ({gap / hi:+.1f} to {gap / lo:+.1f} at sigma's bounds); "
                  f"per seed {' '.join(f'{g:+.4f}' for g in each)}")
        per_seed = [spearman({r: by[(r, s)]["miou"] for r in chain}, chain) for s in seeds]
        rhos += per_seed
        print(f"  Spearman rho of {' > '.join(chain)} per seed: {' '.join(f'{x:+.2f}' for x in per_seed)}")
    if "target" in rows and "target_n8" in rows:  # reported, no chain (datarena.evaluate.ladder)
        gap = rows["target"]["mean"] - rows["target_n8"]["mean"]
        print(f"  (no chain) target > target_n8 at N = {n}: gap {gap:+.4f} = {gap / sigma:+.1f} sigma")
    if rhos:
        print(f"smallest adjacent separation: {worst:.1f} sigma (goal >= 3); Spearman rho 1.0 at every seed and chain: "
              f"{'yes' if min(rhos) == 1.0 else 'NO'}")
    return sigma


def reprint(files: list[Path]) -> None:
    """--report: the figures of stored --json files again, and with several (the same rungs measured
    again: other seeds, or the same seeds after a change of float order) their sigma pooled."""
    stds, df = [], 0
    for f in files:
        d = json.loads(f.read_text())
        by = {(r["rung"], r["seed"]): r for r in d["runs"]}
        seeds = sorted({r["seed"] for r in d["runs"]})
        print(f"\n{f}: preset {d['preset']} {d['overrides'] or ''}; seeds {seeds}")
        report(d["rows"], by, seeds, d.get("n", 400))
        stds += [r["std"] for r in d["rows"].values()]
        df += len(d["rows"]) * (len(seeds) - 1)
    if len(files) > 1:
        sigma = pooled_sigma(stds)
        lo, hi = sigma_bounds(sigma, df)
        print(f"\nsigma pooled over the {len(files)} files: {sigma:.4f} (95 % bounds [{lo:.4f}, {hi:.4f}], {df} degrees of freedom)")
        # the same preset's runs of every file as one sample (draws at other seeds): each rung's
        # mean over all seeds, its sigma, and the chains' gaps between those means
        runs = [r for f in files for r in json.loads(f.read_text())["runs"]]
        if len({(r["rung"], r["seed"]) for r in runs}) < len(runs):
            return  # the same seeds measured twice (another float order): pooled sigma only
        seeds = sorted({r["seed"] for r in runs})
        rungs = [g for g in dict.fromkeys(r["rung"] for r in runs)
                 if all(any(r["rung"] == g and r["seed"] == s for r in runs) for s in seeds)]
        if len(seeds) > 1 and rungs:
            print(f"\nevery file's runs as one sample: seeds {seeds} (interval: t over the seeds)")
            report(rows_of(runs, rungs, seeds), {(r["rung"], r["seed"]): r for r in runs}, seeds,
                   json.loads(files[0].read_text()).get("n", 400))


def parse_overrides(items: list[str]) -> dict:
    """key=value pairs; a value is JSON when it parses as JSON (150, 0.5, [1, 2], null), else a string."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="aerial_scenes")
    ap.add_argument("--set", nargs="*", default=[], help="budget overrides, key=value (JSON values)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=400, help="renders per dataset (the N/8 rung gets n // 8)")
    ap.add_argument("--small", type=int, default=8, help="renders of the quantity chain's larger rung (the other gets small // 8)")
    ap.add_argument("--test", type=int, default=200, help="held-out target renders scored on")
    ap.add_argument("--rungs", nargs="+", default=list(RUNGS), choices=RUNGS)
    ap.add_argument("--workers", type=int, default=2, help="runs in parallel (each with 2 // workers threads)")
    ap.add_argument("--generator", type=Path, help="a learned aerial generator.pt (default: the shipped one; "
                    "'train' trains one, seed 0)")
    ap.add_argument("--work", type=Path, default=Path("bench-scoring"), help="datasets and runs (kept: reruns reuse the datasets)")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("--report", type=Path, nargs="+", help="print the figures of stored --json files (no training)")
    args = ap.parse_args()
    if args.report:
        reprint(args.report)
        return

    overrides = parse_overrides(args.set)
    paths = build(args.work, args.n, args.small, args.test, args.generator)
    tag = "-".join([args.preset, *(f"{k}{v}" for k, v in sorted(overrides.items()))]).replace("/", "_")
    threads = max(1, (os.cpu_count() or 2) // args.workers)
    jobs = [(r, s, paths[r], paths["test"], args.preset, overrides, args.work / "runs" / tag / f"{r}-{s}", threads)
            for s in args.seeds for r in args.rungs]
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(score_one, jobs))
    else:
        runs = [score_one(j) for j in jobs]
    wall = time.perf_counter() - t0

    by = {(r["rung"], r["seed"]): r for r in runs}
    rows = rows_of(runs, args.rungs, args.seeds)
    print(f"\npreset {args.preset} {overrides or ''}; N = {args.n}, S = {args.small}, test = {args.test} target renders; seeds {args.seeds}; "
          f"{len(runs)} runs in {wall:.0f} s ({args.workers} in parallel, {threads} thread(s) each)")
    sigma = report(rows, by, args.seeds, args.n)
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "overrides": overrides, "n": args.n, "rows": rows, "sigma": sigma,
                                         "runs": [{k: v for k, v in r.items() if k != "conf"} for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
