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


def feature_blocks(x: torch.Tensor, n_blocks: int = 2) -> list[torch.Tensor]:
    """Split the columns of x (rows where the cues vary independently: the target set) into the
    blocks that are most independent of each other: spectral partition of |correlation|.

    Two cues that are correlated in the labeled rows but independent on the target rows leave
    their features correlated within a cue and uncorrelated across cues on the target rows, so
    the partition finds each cue's features whatever their order (an embedding's columns, two
    coordinates). Recursive bisection by the Fiedler vector of the normalised Laplacian."""
    z = x.double()
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)
    a = (z.T @ z / max(len(z) - 1, 1)).abs()
    a.fill_diagonal_(0.0)
    blocks = [torch.arange(x.shape[1])]
    while len(blocks) < n_blocks:
        big = max(range(len(blocks)), key=lambda i: len(blocks[i]))
        cols = blocks.pop(big)
        if len(cols) < 2:
            blocks.append(cols)
            break
        sub = a[cols][:, cols] + 1e-6  # a tiny floor keeps the graph connected
        d = sub.sum(1).rsqrt()
        lap = torch.eye(len(cols), dtype=sub.dtype) - d[:, None] * sub * d[None]
        fiedler = torch.linalg.eigh(lap).eigenvectors[:, 1]
        side = fiedler >= fiedler.median() if (fiedler >= 0).all() or (fiedler < 0).all() else fiedler >= 0
        blocks += [cols[side], cols[~side]]
    return sorted(blocks, key=lambda b: int(b.min()))


class BlockHeads(nn.Module):
    """For vectors: head k is linear in feature block k alone (`feature_blocks` of the target
    rows), so each head is bound to one cue and none can mix two; the MLP alternates with it
    under arch "both" (the vector counterpart of the side-blind halves)."""

    def __init__(self, blocks: list[torch.Tensor], n_classes: int):
        super().__init__()
        for i, b in enumerate(blocks):
            self.register_buffer(f"cols{i}", b.clone())
        self.heads = nn.ModuleList(nn.Linear(len(b), n_classes) for b in blocks)
        self.n_classes, self.n_heads = n_classes, len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # images: a block is a set of pixels (`image_regions`)
        return torch.stack([h(x[:, getattr(self, f"cols{i}")]) for i, h in enumerate(self.heads)])


def image_regions(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The flat pixel indices of the top, bottom, left and right halves of a (C, H, W) image
    (every channel): the image counterpart of `feature_blocks`. A cue confined to one part of the
    image (999's caption band under the face) leaves a half without it."""
    c, h, w = shape
    idx = torch.arange(c * h * w).reshape(c, h, w)
    return [idx[:, : h // 2].flatten(), idx[:, h // 2 :].flatten(), idx[:, :, : w // 2].flatten(), idx[:, :, w // 2 :].flatten()]


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
        trunk: nn.Module = MLPTrunk(input_shape[0])
    elif arch == "pool":
        trunk = PoolCNNTrunk(tuple(input_shape))  # type: ignore[arg-type]
    elif arch == "halves":
        trunk = HalvesTrunk(tuple(input_shape))  # type: ignore[arg-type]
    else:
        trunk = FlatCNNTrunk(tuple(input_shape))  # type: ignore[arg-type]
    return MultiHead(trunk, n_classes, n_heads)
