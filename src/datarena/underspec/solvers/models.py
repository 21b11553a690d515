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


class FlatCNNTrunk(nn.Module):
    """Two conv+pool blocks and a linear layer over the whole map (position-aware)."""

    def __init__(self, in_shape: tuple[int, int, int], width: int = 16, hidden: int = 64):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, c, h, w)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


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


def make_model(input_shape: tuple[int, ...], n_classes: int, n_heads: int) -> MultiHead:
    """MLP for vectors (00, 23, 456), CNN for images."""
    if len(input_shape) == 1:
        trunk: nn.Module = MLPTrunk(input_shape[0])
    else:
        trunk = FlatCNNTrunk(tuple(input_shape))  # type: ignore[arg-type]
    return MultiHead(trunk, n_classes, n_heads)
