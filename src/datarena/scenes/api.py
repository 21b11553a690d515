"""One scene interface over both grammar kinds: load, sample, render (and `writers.write_dataset`
to write). Digit grammars (`grammar.SceneGrammar`: objects with a class and a pose) and scene
graphs (`graph.SceneGraphGrammar`: typed nodes under parents) keep their own classes; callers
that do not care which kind they hold go through these functions.

    g = load("aerial")                      # or "digit_scenes", or a YAML file
    batch = sample(g, 16, seed=0)           # scene i depends on (seed, i) alone
    out = render(g, batch)                  # .images (N, C, H, W) in [0, 1], .masks, .boxes (-1: absent)
"""

from __future__ import annotations

import os

from datarena.data.segmentation import DIGIT_CLASSES


def load(name_or_path: str | os.PathLike):
    """A grammar of either kind by shipped name (see `datarena scenes list`) or YAML file."""
    from datarena.scenes.graph import is_graph_grammar, load_graph_grammar

    if is_graph_grammar(name_or_path):
        return load_graph_grammar(name_or_path)
    from datarena.scenes.grammar import load_grammar

    return load_grammar(str(name_or_path))


def _is_graph(grammar) -> bool:
    from datarena.scenes.graph import SceneGraphGrammar

    return isinstance(grammar, SceneGraphGrammar)


def sample(grammar, n: int, seed: int, start: int = 0):
    """Scenes start .. start+n-1 of the grammar's stream for `seed` (a `SceneBatch` or `SceneGraphBatch`)."""
    if _is_graph(grammar):
        from datarena.scenes.graph import sample_graphs

        return sample_graphs(grammar, n, seed, start=start)
    return grammar.sample(n, seed, start=start)


def render(grammar, batch, attrs=None):
    """Images, class masks and boxes of a sampled batch; `attrs` replaces the batch's attributes (a
    generator's output; differentiable in them)."""
    if _is_graph(grammar):
        from datarena.scenes.graph import render_graph

        return render_graph(grammar, batch, attrs)
    from datarena.scenes.render import render as render_digits

    return render_digits(batch if attrs is None else batch.with_attrs(attrs), grammar)


def classes(grammar) -> tuple[str, ...]:
    """The class names of its masks, background first."""
    return ("background", *grammar.classes) if _is_graph(grammar) else DIGIT_CLASSES
