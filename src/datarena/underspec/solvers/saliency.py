"""Input-gradient saliency of each hypothesis, averaged over target rows, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def head_saliency(models, x: torch.Tensor, max_rows: int = 256) -> np.ndarray:
    """(H, *input_shape): mean |d log p(predicted class) / d x| of every hypothesis."""
    x = x[:max_rows].clone().requires_grad_(True)
    maps = []
    for m in models:
        logits = m(x)  # (K, B, C)
        for k in range(logits.shape[0]):
            logp = logits[k].log_softmax(-1)
            picked = logp.gather(1, logp.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(picked, x, retain_graph=True)
            maps.append(grad.abs().mean(0).numpy())
    return np.stack(maps)


def write_saliency_png(maps: np.ndarray, path: Path, chosen: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    if maps.ndim == 2:  # vectors: one bar chart per hypothesis
        fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), squeeze=False)
        for h, ax in enumerate(axes[:, 0]):
            ax.bar(np.arange(maps.shape[1]), maps[h], width=1.0, color="C1" if h == chosen else "C0")
            ax.set_ylabel(f"head {h}" + (" *" if h == chosen else ""), fontsize=8)
    else:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n * maps.shape[-1] / maps.shape[-2] / 1.6 + 1, 2.4), squeeze=False)
        for h, ax in enumerate(axes[0]):
            img = maps[h].mean(0) if maps[h].ndim == 3 else maps[h]
            ax.imshow(img, cmap="inferno")
            ax.set_title(f"head {h}" + (" (chosen)" if h == chosen else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
