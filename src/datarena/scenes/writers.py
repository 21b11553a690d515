"""Write rendered scenes as datasets: the hackathon-style .npy layout or the VOC layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

import datarena
from datarena.data.checksums import atomic_directory, sha256_file, write_json
from datarena.data.segmentation import DIGIT_CLASSES, finish_voc, make_voc_dirs, write_pair
from datarena.errors import ConfigError
from datarena.progress import progress_bar
from datarena.scenes import api
from datarena.scenes.grammar import SceneGrammar
from datarena.scenes.render import Rendered, render_grammar

FORMATS = ("voc", "npy")


def save_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, ncol: int = 8, title: str | None = None,
              scale: int = 1) -> None:
    """Save up to ncol*ncol images in [0, 1] as one PNG grid, for every scene kind: grey (N,1,H,W) or
    (N,H,W), colour (N,3,H,W). With a title the grid is drawn by matplotlib, else written pixel for
    pixel, each image scaled up `scale` times."""
    arr = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    arr = np.clip(arr[: ncol * ncol], 0, 1)
    if arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)  # (N, H, W, 3)
    else:
        arr = arr.reshape(len(arr), arr.shape[-2], arr.shape[-1])
    rows = max(1, -(-len(arr) // ncol))
    h, w = arr.shape[1:3]
    grid = np.ones((rows * (h + 2), ncol * (w + 2), *arr.shape[3:]), dtype=np.float32)
    for i, img in enumerate(arr):
        r, c = divmod(i, ncol)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = img
    if title is None:
        from PIL import Image

        im = Image.fromarray((grid * 255 + 0.5).astype(np.uint8))
        im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(ncol * 0.9, rows * 0.9 + 0.4), dpi=100)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_scenes(
    grammar: SceneGrammar,
    n: int,
    seed: int,
    out: str | os.PathLike,
    fmt: str = "voc",
    force: bool = False,
    mnist_dir: str | None = None,
    batch_size: int = 1024,
    show_progress: bool = True,
    transform=None,
) -> Path:
    """Render n scenes of a grammar into `out` (atomically) with meta.json and preview.png."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}.")
    meta = {
        "generator": "datarena.scenes", "grammar": grammar.model_dump(mode="json"), "seed": seed,
        "n": n, "datarena_version": datarena.__version__,
    }
    first_batch: Rendered | None = None
    with atomic_directory(out, force=force) as tmp:
        parts: dict[str, list[np.ndarray]] = {"X": [], "y": [], "masks": [], "classes": [], "boxes": []}
        names: list[str] = []
        if fmt == "voc":
            make_voc_dirs(tmp)
        with progress_bar(f"rendering {grammar.name}", total=n, unit="scenes", enabled=show_progress) as advance:
            for first, r in render_grammar(grammar, n, seed, batch_size=batch_size, mnist_dir=mnist_dir, transform=transform):
                first_batch = first_batch or r
                images = (r.images[:, 0].numpy() * 255.0 + 0.5).astype(np.uint8)
                if fmt == "voc":
                    for i, (img, mask) in enumerate(zip(images, r.masks.numpy(), strict=True)):
                        name = f"{first + i:06d}"
                        write_pair(tmp, name, img, mask)
                        names.append(name)
                else:
                    parts["X"].append(r.images[:, 0].numpy().astype(np.float32))
                    parts["y"].append(r.labels.numpy())
                    parts["masks"].append(r.masks.numpy())
                    parts["classes"].append(r.classes.numpy())
                    parts["boxes"].append(r.boxes.numpy())
                advance(len(images))
        if fmt == "voc":
            finish_voc(tmp, names, DIGIT_CLASSES, meta)
        else:
            files = {}
            for key, arrays in parts.items():
                np.save(tmp / f"{key}.npy", np.concatenate(arrays))
                files[f"{key}.npy"] = sha256_file(tmp / f"{key}.npy")
            write_json(tmp / "meta.json", {**meta, "format": "npy", "classes": list(DIGIT_CLASSES), "files": files})
        save_grid(first_batch.images[:64], tmp / "preview.png", title=f"{grammar.name}, seed {seed}")
    return Path(out)


def write_dataset(grammar, n: int, seed: int, out: str | os.PathLike, force: bool = False,
                  show_progress: bool = True, mnist_dir: str | None = None, transform=None,
                  meta: dict | None = None) -> Path:
    """Render n scenes of any grammar to the VOC layout: a shipped name, a YAML file or a loaded
    grammar, flat or scene graph; `transform(batch) -> attributes` rewrites the sampled scenes (a
    learned generator: `datarena.metasim.io.write_generator_dataset`). The one entry point of the
    CLI, the dataset track, the demo and the benchmarks."""
    from datarena.scenes.graph import SceneGraphGrammar, write_graph_scenes

    g = api.load(grammar) if isinstance(grammar, str | os.PathLike) else grammar
    if isinstance(g, SceneGraphGrammar):
        with torch.no_grad():
            return write_graph_scenes(g, n, seed, out, force=force, transform=transform, meta=meta)
    return write_scenes(g, n, seed, out, fmt="voc", force=force, mnist_dir=mnist_dir, show_progress=show_progress,
                        transform=transform)


def dataset_classes(grammar: str | os.PathLike) -> tuple[str, ...]:
    """The class names (background first) a grammar's VOC dataset is labelled with."""
    return api.classes(api.load(grammar))
