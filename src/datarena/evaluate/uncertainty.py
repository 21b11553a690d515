"""How sure a score is: a 95 % interval for mIoU, and which scores a board can tell apart.

A dataset's score is the mIoU of a fixed training on it, measured on a finite test set. Two
things move it: the test images (another sample of the same distribution would give another
number) and the training seed. The interval combines both:

* test images: a bootstrap over images (resample the per-image confusion matrices with
  replacement, recompute the mIoU of the seed-averaged score), B = 1000 resamples;
* seeds: with k >= 2 training seeds, the spread of their mIoUs, s^2 / k.

The half-width is 1.96 x sqrt(var_bootstrap + s^2 / k). With one seed the seed term is unknown
and left out (the report says so: `seed_spread_included: false`).

Rank groups: a row's rank is 1 + the number of rows whose interval lies wholly above its own
(scores that are significantly better); rows that no interval separates share a rank.
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959964
BOOTSTRAP = 1000


def miou_of(conf: np.ndarray) -> np.ndarray:
    """mIoU of (..., C, C) confusion matrices, over the classes present in prediction or truth."""
    conf = conf.astype(np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(-2) + conf.sum(-1) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), 0.0)
    return np.where(present.any(-1), iou.sum(-1) / np.maximum(present.sum(-1), 1), 0.0)


def score_interval(per_seed_confusions: list[np.ndarray], n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Mean mIoU over seeds and its 95 % interval from per-image confusions, one (N, C, C) array
    per training seed (the same N test images for every seed)."""
    stacks = [np.asarray(c, dtype=np.int64) for c in per_seed_confusions]
    if not stacks or any(s.ndim != 3 for s in stacks):
        raise ValueError("need one (n_images, C, C) confusion stack per seed")
    n = len(stacks[0])
    seed_mious = np.array([float(miou_of(s.sum(0))) for s in stacks])
    mean = float(seed_mious.mean())
    rng = np.random.default_rng(seed)
    # how often each test image appears in each resample; the same resamples for every seed
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) if n > 0 else np.zeros((n_boot, 0), np.int64)
    boot = np.zeros(n_boot)
    for s in stacks:  # the seed-averaged mIoU on each resample of the test images
        boot += miou_of(np.einsum("bn,nij->bij", counts, s))
    boot /= len(stacks)
    var_boot = float(boot.var(ddof=1)) if n_boot > 1 else 0.0
    k = len(stacks)
    var_seed = float(seed_mious.var(ddof=1)) / k if k > 1 else 0.0
    half = Z95 * float(np.sqrt(var_boot + var_seed))
    return {"miou": mean, "miou_low": max(0.0, mean - half), "miou_high": min(1.0, mean + half),
            "miou_half_width": half, "seed_mious": seed_mious.tolist(),
            "std_test_images": float(np.sqrt(var_boot)),
            "std_seeds": float(seed_mious.std(ddof=1)) if k > 1 else None,
            "seed_spread_included": k > 1, "n_test_images": int(n), "bootstrap": n_boot}


def rank_groups(rows: list[dict], low: str = "miou_low", high: str = "miou_high") -> list[int]:
    """For each row: 1 + the number of rows significantly better (interval wholly above its own)."""
    return [1 + sum(1 for other in rows if other[low] > row[high]) for row in rows]


def rerun_tolerance(reference: dict) -> tuple[float, str]:
    """How far a re-run's mIoU may fall from a recorded score when it cannot be bit-exact (another
    device or library version), from the noise the score itself measured: a re-run is another draw
    of the training, so with k seeds the two means differ by 1.96 x sqrt(2 / k) x the seed spread at
    95 %; with one seed (spread unknown) the recorded interval's half-width stands in for it."""
    k = int(reference.get("seeds") or 1)
    if reference.get("std_seeds") is not None and k > 1:
        tol = Z95 * float(np.sqrt(2.0 / k)) * float(reference["std_seeds"])
        return tol, f"1.96 x sqrt(2/{k}) x the recorded seed spread {reference['std_seeds']:.4f}"
    if reference.get("miou_high") is not None and reference.get("miou_low") is not None:
        tol = (float(reference["miou_high"]) - float(reference["miou_low"])) / 2
        return tol, "the recorded score's 95 % half-width (one seed: its spread is not measured)"
    return 0.02, "0.02 (a score recorded before intervals existed)"


def part_scores(per_seed: list[np.ndarray], indices: np.ndarray, class_names: list[str]) -> dict:
    """The score (mean over seeds, 95 % interval, per-class IoU of the first seed) of the test
    images `indices` alone: a public or private part of a split test set."""
    from datarena.evaluate.metrics import segmentation_scores

    parts = [np.asarray(s)[indices] for s in per_seed]
    out = score_interval(parts)
    first = segmentation_scores(parts[0].sum(0))
    out["per_class_iou"] = {name: v for name, v in zip(class_names, first["per_class_iou"], strict=False)}
    out["pixel_accuracy"] = first["pixel_accuracy"]
    return out
