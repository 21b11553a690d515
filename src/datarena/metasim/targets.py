"""Families of Meta-Sim targets nobody tuned for, drawn from a seed (`bench_metasim.py --pair random`).

`digit_targets(seed, n)`: BigMNIST variants (64 x 64, one held-out digit): rotation uniform in
[0, 360) degrees, scale uniform in [0.7, 1.3], the centre uniform over where the digit's 28 x 28
texture box (times the scale) fits on the canvas.

`aerial_targets(seed, n)`: variants of `aerial_target` drawn from ranges around it: car density
(2-4 or 3-5 cars per road, inside the prior's 2-5: a generator keeps the scene's structure), car
heading relative to the road (mean uniform in [-30, 30] degrees), and road layout (the second
road crosses the first at an angle uniform in [60, 120] degrees; the crossing's offset from the
centre up to 4-10 px).

Each is a plain grammar, the same as a YAML file a user writes (`docs/scenes.md`).
"""

from __future__ import annotations

import numpy as np

from datarena.scenes.grammar import SceneGrammar, parse_grammar
from datarena.scenes.graph import SceneGraphGrammar, load_graph_grammar, parse_graph_grammar

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


def aerial_targets(seed: int, n: int = 5) -> list[SceneGraphGrammar]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 34]))
    base = load_graph_grammar("aerial_target").model_dump(mode="json")
    out = []
    for i in range(n):
        g = {**base, "types": {k: {**v, "attributes": dict(v["attributes"])} for k, v in base["types"].items()}}
        cars, road = g["types"]["car"], g["types"]["road"]
        low = int(rng.integers(2, 4))
        cars["count"] = {"min": low, "max": low + 2}
        heading = float(rng.uniform(-30.0, 30.0))
        cars["attributes"]["heading"] = {"kind": "normal", "mean": round(heading, 1), "std": 4}
        cross = float(rng.uniform(60.0, 120.0))
        road["attributes"]["angle"] = {"kind": "mixture", "components": [0, round(cross, 1)], "weights": [1, 1]}
        spread = float(rng.uniform(4.0, 10.0))
        for axis in ("x", "y"):
            road["attributes"][axis] = {"kind": "uniform", "low": -round(spread, 1), "high": round(spread, 1)}
        g["name"] = f"aerial_random_{seed}_{i}"
        g["description"] = (f"{low}-{low + 2} cars per road, heading {heading:+.0f} deg to the road, "
                            f"roads crossing at {cross:.0f} deg within {spread:.0f} px of the centre")
        out.append(parse_graph_grammar(g, f"random aerial target {i} of family {seed}"))
    return out
