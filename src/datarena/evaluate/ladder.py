"""A quality ladder: segmentation datasets whose order of quality is known by construction.

What a scoring instrument must resolve (`benchmarks/bench_scoring.py`): renders of the target
grammar beat an eighth as many of them (where data is scarce: 8 renders against 1; at 400 against
50 the grammar's scenes repeat so regularly that 50 teach what 400 do, so that pair is reported
but is no chain), beat the same renders with a share of their objects' labels corrupted (more
corruption, worse), and beat renders of the prior grammar; a generator that Meta-Sim learned from
the prior beats the prior.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from datarena.errors import ConfigError

# the rungs and the orders known by construction (each chain best first)
CHAINS: tuple[tuple[str, ...], ...] = (
    ("small", "small_n8"),
    ("target", "corrupt30", "corrupt60"),
    ("target", "prior"),
    ("learned", "prior"),
)


def corrupt_dataset(src: str | Path, out: str | Path, fraction: float, seed: int = 0, force: bool = False) -> Path:
    """Copy a rendered scene dataset (the VOC layout with `instances.npz`), corrupting the masks of
    `fraction` of its objects: each chosen object is erased (labelled background) or swapped to
    the next object class, half and half. Images are untouched; only what the labels say changes.
    """
    from datarena.data.checksums import atomic_directory
    from datarena.data.segmentation import (
        finish_voc,
        load_segmentation,
        make_voc_dirs,
        save_mask_png,
    )

    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the corrupted fraction must lie in [0, 1], got {fraction}.")
    src = Path(src)
    if not (src / "instances.npz").is_file():
        raise ConfigError(f"{src} has no instances.npz: corrupt a dataset written by `datarena scenes render`.")
    data = load_segmentation(src)
    instances = np.load(src / "instances.npz")["instances"]
    n_classes = len(data.classes)  # background + object classes
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(fraction * 1000)]))
    with atomic_directory(out, force=force) as tmp:
        make_voc_dirs(tmp)
        for i in range(len(data)):
            name = data.names[i]
            mask = np.array(data.mask(i))
            inst = instances[i]
            for k in np.unique(inst[inst > 0]):
                if rng.random() >= fraction:
                    continue
                where = inst == k
                labels = np.bincount(mask[where].ravel(), minlength=n_classes)
                cls = int(labels[1:n_classes].argmax()) + 1  # the object's own class
                erase = rng.random() < 0.5
                mask[where & (mask == cls)] = 0 if erase else cls % (n_classes - 1) + 1
            shutil.copyfile(src / "JPEGImages" / f"{name}.jpg", tmp / "JPEGImages" / f"{name}.jpg")
            save_mask_png(mask, tmp / "SegmentationClass" / f"{name}.png")
        shutil.copyfile(src / "instances.npz", tmp / "instances.npz")
        finish_voc(tmp, list(data.names), tuple(data.classes),
                   {**data.meta, "corrupted": {"fraction": fraction, "seed": seed, "from": src.name}})
    return Path(out)


def spearman(scores: dict[str, float], chain: tuple[str, ...]) -> float:
    """Spearman's rho between a chain's known order (best first) and the scores' order."""
    from scipy.stats import spearmanr

    values = [scores[r] for r in chain]
    if len(chain) == 2:
        return 1.0 if values[0] > values[1] else -1.0
    return float(spearmanr(list(range(len(chain), 0, -1)), values).statistic)
