"""Families of Meta-Sim targets nobody tuned for, drawn from a seed (`bench_metasim.py --pair random`).

`digit_targets(seed, n)`: BigMNIST variants (64 x 64, one held-out digit): rotation uniform in
[0, 360) degrees, scale uniform in [0.7, 1.3], the centre uniform over where the digit's 28 x 28
texture box (times the scale) fits on the canvas. Each is a plain grammar, the same as a YAML
file a user writes (`docs/scenes.md`).
"""

from __future__ import annotations

import numpy as np

from datarena.scenes.grammar import SceneGrammar, parse_grammar

DIGIT_BOX = 28


def digit_targets(seed: int, n: int = 10, canvas: int = 64) -> list[SceneGrammar]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 33]))
    out = []
    for i in range(n):
        rotation = float(rng.uniform(0.0, 360.0))
        scale = float(rng.uniform(0.7, 1.3))
        half = DIGIT_BOX * scale / 2
        x, y = (float(rng.uniform(half, canvas - half)) for _ in range(2))
        out.append(parse_grammar({
            "name": f"bigmnist_random_{seed}_{i}",
            "description": f"rotation {rotation:.0f} deg, centre ({x:.1f}, {y:.1f}), scale {scale:.2f}",
            "canvas": canvas, "objects": {"min": 1, "max": 1},
            "object": {"split": "heldout", "x": round(x, 2), "y": round(y, 2), "rotation": round(rotation, 2),
                       "scale": round(scale, 3), "intensity": 1.0},
        }, f"random target {i} of family {seed}"))
    return out
