"""Networks that fit the exercise data kinds: an MLP for vectors, a small CNN for images; K heads."""

from __future__ import annotations

import torch
from torch import nn


class MLPTrunk(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearTrunk(nn.Module):
    """No hidden layer: the heads are linear in the (standardised) features. A linear head cannot
    mix two cues into a new one, so DivDis's two heads land on the two cues themselves; the MLP
    alternates with it under arch "both" (the vector counterpart of the side-blind halves)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _stem(h: int, w: int) -> list[nn.Module]:
    """Images of 28 pixels or more are averaged 2x2 first: digits stay legible at 14 pixels and
    every later layer costs a quarter (the solvers must run in seconds on 2 CPU cores)."""
    return [nn.AvgPool2d(2)] if min(h, w) >= 28 else []


class FlatCNNTrunk(nn.Module):
    """Two conv+pool blocks and a linear layer over the whole map (position-aware)."""

    def __init__(self, in_shape: tuple[int, int, int], width: int = 16, hidden: int = 64):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            *_stem(h, w),
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, c, h, w)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class PoolCNNTrunk(nn.Module):
    """Three conv blocks and a global max over positions: the same cue anywhere gives the same code."""

    def __init__(self, in_shape: tuple[int, int, int], width: int = 32, hidden: int = 64):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            *_stem(h, w),
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, hidden, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class HalvesTrunk(nn.Module):
    """For side-by-side pairs (width = 2 x height): one CNN reads each half, the codes are maxed,
    so which side a cue sits on cannot matter; other images are read whole."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: int = 64):
        super().__init__()
        c, h, w = in_shape
        self.split = w == 2 * h
        self.inner = FlatCNNTrunk((c, h, w // 2 if self.split else w), hidden=hidden)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.split:
            return self.inner(x)
        left, right = x.chunk(2, dim=-1)
        both = self.inner(torch.cat([left, right]))
        return torch.maximum(*both.chunk(2))


class MultiHead(nn.Module):
    """A shared trunk and K linear heads: logits of shape (K, batch, classes)."""

    def __init__(self, trunk: nn.Module, n_classes: int, n_heads: int):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.Linear(trunk.out_dim, n_classes * n_heads)
        self.n_classes, self.n_heads = n_classes, n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.heads(self.trunk(x))
        return z.view(len(x), self.n_heads, self.n_classes).transpose(0, 1)


def make_model(input_shape: tuple[int, ...], n_classes: int, n_heads: int, arch: str = "flat") -> MultiHead:
    """MLP for vectors (00, 23, 456); for images a position-aware CNN ("flat") or a
    translation-invariant one ("pool")."""
    if len(input_shape) == 1:
        trunk: nn.Module = LinearTrunk(input_shape[0]) if arch == "halves" else MLPTrunk(input_shape[0])
    elif arch == "pool":
        trunk = PoolCNNTrunk(tuple(input_shape))  # type: ignore[arg-type]
    elif arch == "halves":
        trunk = HalvesTrunk(tuple(input_shape))  # type: ignore[arg-type]
    else:
        trunk = FlatCNNTrunk(tuple(input_shape))  # type: ignore[arg-type]
    return MultiHead(trunk, n_classes, n_heads)
