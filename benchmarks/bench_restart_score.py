"""How informative is the score that chooses among Meta-Sim restarts? On the MNIST pair, for each start
(0, 90, 180, 270 deg of rotation) and seed, the task score of that start (a task network trained on its
renders, accuracy on the target's labelled val digits): mean and standard deviation over seeds, seconds.

Run: .venv/bin/python benchmarks/bench_restart_score.py [--seeds 0 1 2] [--images 2048 1024] [--steps 300 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from datarena.metasim.train import MetaSimConfig, digit_problem
from datarena.scenes.grammar import load_grammar


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="mnist")
    ap.add_argument("--target", default="mnist_rot90")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--images", type=int, nargs="+", default=[2048, 1024], help="score_images settings to compare")
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 200], help="score_steps, one per --images")
    args = ap.parse_args()
    prior, target = load_grammar(args.prior), load_grammar(args.target)
    print(f"{args.prior} -> {args.target}; seeds {args.seeds}")
    print(f"{'images':>6s} {'steps':>5s} {'start':>5s}  {'scores':24s} {'mean':>6s} {'sd':>6s} {'s/score':>7s}")
    for images, steps in zip(args.images, args.steps, strict=True):
        runs = {t: [] for t in (0.0, 0.25, 0.5, 0.75)}
        seconds = []
        for seed in args.seeds:
            make, _ = digit_problem(prior, target, MetaSimConfig(seed=seed, score_images=images, score_steps=steps))
            for turn in runs:
                p = make()
                p.turn_periodic(turn)
                t0 = time.perf_counter()
                runs[turn].append(p.task_score())
                seconds.append(time.perf_counter() - t0)
        for turn, scores in runs.items():
            s = np.array(scores)
            print(f"{images:6d} {steps:5d} {turn * 360:4.0f}°  {np.array2string(s, precision=3):24s} {s.mean():6.3f} "
                  f"{s.std(ddof=1):6.3f} {np.mean(seconds):7.1f}", flush=True)


if __name__ == "__main__":
    main()
