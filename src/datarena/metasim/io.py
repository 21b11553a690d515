"""Loading a saved Meta-Sim generator of either kind (MNIST grammars or scene graphs)."""

from __future__ import annotations

from pathlib import Path

import torch

from datarena.errors import ConfigError
from datarena.metasim.generator import SceneGenerator


def load_generator(path: str | Path):
    """A generator saved by `train_metasim` (or `save_aerial_run`), with the prior grammar it reads."""
    from datarena.scenes.grammar import parse_grammar

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"generator file {path} does not exist (expected generator.pt from `datarena metasim train`).")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ConfigError(f"{path} is not a datarena Meta-Sim generator.")
    if blob.get("kind") == "scene_graph":  # a graph generator (aerial): its own loader
        from datarena.metasim.aerial import (
            load_graph_generator,  # torch and the graph renderer, on demand
        )

        return load_graph_generator(blob, str(path))
    gen = SceneGenerator(blob["canvas"], class_conditional=blob.get("class_conditional", False))
    gen.load_state_dict(blob["state_dict"])
    gen.eval()
    return gen, parse_grammar(blob["prior"], f"prior stored in {path}")


def write_generator_dataset(generator: str | Path, n: int, seed: int, out: str | Path, force: bool = False,
                            mnist_dir: str | None = None) -> Path:
    """Render n scenes of a learned generator's prior, rewritten by it, to the VOC layout."""
    from datarena.scenes.writers import write_dataset

    transform, grammar = load_generator(generator)
    return write_dataset(grammar, n, seed, out, force=force, transform=transform, mnist_dir=mnist_dir,
                         meta={"learned_generator": Path(generator).name})


SHIPPED = Path(__file__).parent / "shipped"


def shipped_generator(name: str = "aerial_learned") -> Path:
    """A generator the project trained and ships (metasim/shipped/NAME.pt; how to reproduce it:
    metasim/shipped/README.md)."""
    path = SHIPPED / f"{name}.pt"
    if not path.is_file():
        raise ConfigError(f"no shipped generator {name!r}; shipped: {', '.join(p.stem for p in SHIPPED.glob('*.pt'))}.")
    return path
