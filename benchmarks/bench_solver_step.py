"""The divdis training step of the underspecified-exercise solvers, as shipped and as it was.

Times `train_multihead` (datarena.underspec.solvers.training) on an image exercise for each
image trunk, twice in the same run: the shipped step (one forward pass over the labeled and the
diversity rows, images and weights in channels-last order) and the baseline (a forward pass for
each batch, the default memory order), from the same random start and batches. Prints the median
milliseconds per step of each and their ratio, then the wall time of whole `solve` calls
(divdis, the default 4 restarts; the issue asks <= 30 s per image exercise on 2 cores).

Run: .venv/bin/python benchmarks/bench_solver_step.py [--exercise 01] [--seed 3000] [--threads 2] [--steps 40] [--solve 01 03]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exercise", default="01")
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--solve", nargs="*", default=["01", "03"], help="exercises to solve whole (none: skip)")
    a = ap.parse_args()

    import numpy as np
    import torch

    from datarena.underspec.exercises import generate_exercise
    from datarena.underspec.solvers import LocalOracle, _prepare, solve
    from datarena.underspec.solvers import training as T
    from datarena.underspec.solvers.models import make_model
    from datarena.underspec.suite import load_suite

    torch.set_num_threads(a.threads)
    suite = load_suite()
    bundle = generate_exercise(suite.get(a.exercise), a.seed)
    data, *_ = _prepare(bundle, 0.15, np.random.default_rng(0))
    cfg = T.TrainConfig(steps=a.steps)

    def baseline(gen: torch.Generator, arch: str) -> None:
        """The step before: two forward passes (labeled rows, then diversity rows), default memory order."""
        model = make_model(tuple(data.x_lab.shape[1:]), data.n_classes, cfg.n_heads, arch)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        for _ in range(cfg.steps):
            bl = T._batches(len(data.x_lab), cfg.batch_labeled, gen)
            loss = T._ce_heads(model(data.x_lab[bl]), data.y_lab[bl])
            probs = model(T._diversity_batch(data, cfg.batch_unlabeled, gen, cfg.diversity)).softmax(-1)
            loss = loss + cfg.lambda_mi * T.pairwise_mutual_information(probs) + cfg.lambda_reg * T.marginal_kl(probs, data.prior)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def shipped(gen: torch.Generator, arch: str) -> None:
        T.train_multihead(data, cfg, diversify=True, gen=gen, arch=arch)

    print(f"exercise {a.exercise} (seed {a.seed}): {tuple(data.x_lab.shape[1:])} images, batches {cfg.batch_labeled} "
          f"labeled + {cfg.batch_unlabeled} diversity rows, {a.threads} thread(s), median of {a.repeats} x {a.steps} steps")
    print(f"{'trunk':<8} {'baseline ms/step':>17} {'shipped ms/step':>16} {'ratio':>6}")
    for arch in ("flat", "halves"):
        times = {"baseline": [], "shipped": []}
        for _ in range(a.repeats):
            for name, fn in (("baseline", baseline), ("shipped", shipped)):
                torch.manual_seed(0)
                gen = torch.Generator().manual_seed(0)
                t0 = time.perf_counter()
                fn(gen, arch)
                times[name].append((time.perf_counter() - t0) / a.steps * 1000)
        base, new = statistics.median(times["baseline"]), statistics.median(times["shipped"])
        print(f"{arch:<8} {base:17.1f} {new:16.1f} {base / new:5.2f}x")
    for ex in a.solve:
        b = generate_exercise(suite.get(ex), a.seed)
        r = solve(b, "divdis", LocalOracle(b.y_target), seed=a.seed)
        print(f"solve {ex} (divdis, {T.TrainConfig().restarts} restarts, {a.threads} thread(s)): {r.seconds:.1f} s")


if __name__ == "__main__":
    main()
