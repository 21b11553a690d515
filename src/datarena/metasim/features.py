"""Fixed image features and the MMD distribution loss.

No pretrained ImageNet network can be downloaded where datarena runs its tests, so the default
feature network is a *seeded random* convolutional network (two 5x5 conv + ReLU + average-pool
blocks, then a 4x4 spatial map): random conv features keep the layout and orientation of strokes,
which is exactly what the MNIST rotation/position experiments need. A user can pass a checkpoint
(a state_dict of `FeatureNet`, or a TorchScript module taking (N,1,H,W) in [0,1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datarena.errors import ConfigError


def _seeded_he_init(convs, gen: torch.Generator) -> None:
    """He-normal weights and small biases drawn from `gen`, conv after conv (the features of a seed)."""
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)


class FeatureNet(nn.Module):
    def __init__(self, width: int = 32, seed: int = 0, in_channels: int = 1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, padding=2)
        _seeded_he_init((self.conv1, self.conv2), gen)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 32:
            x = F.adaptive_avg_pool2d(x, 32)
        h = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        h = F.avg_pool2d(F.relu(self.conv2(h)), 2)
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)
        return h / (h.norm(dim=1, keepdim=True) + 1e-6)


class PatchStatsNet(nn.Module):
    """Seeded random dilated convs at full resolution; an image's feature is the mean response of each
    channel over the image: a bag of local patterns (what objects look like and what they sit on,
    wherever they are), for scenes whose layout varies more than their content."""

    def __init__(self, width: int = 48, seed: int = 0, in_channels: int = 3):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList(nn.Conv2d(c, width, 3, padding=d, dilation=d)
                                   for c, d in ((in_channels, 1), (width, 2), (width, 4)))
        _seeded_he_init(self.convs, gen)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, stats = x, []
        for conv in self.convs:
            h = F.relu(conv(h))
            stats.append(h.mean((2, 3)))
        f = torch.cat(stats, 1)
        return f / (f.norm(dim=1, keepdim=True) + 1e-6)


def load_feature_net(path: str | Path | None = None, seed: int = 0) -> nn.Module:
    """The seeded random FeatureNet, or a user's checkpoint."""
    if path is None:
        return FeatureNet(seed=seed).eval()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"feature checkpoint {path} does not exist.")
    try:
        net = torch.jit.load(str(path))
    except Exception:  # noqa: BLE001 - not TorchScript: try a FeatureNet state_dict
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureNet()
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{path} is neither TorchScript nor a FeatureNet state_dict: {exc}") from None
    net.requires_grad_(False)
    return net.eval()


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """Biased squared MMD with a sum of Gaussian kernels exp(-d^2 / (2 s^2)) over bandwidths s."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    k = sum(torch.exp(-d2 / (2.0 * s * s)) for s in bandwidths)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


def median_bandwidths(x: torch.Tensor, y: torch.Tensor, factors=(0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Kernel widths as multiples of the median pairwise distance (fixed for a run)."""
    with torch.no_grad():
        d = torch.cdist(torch.cat([x, y]), torch.cat([x, y]))
        med = d[d > 0].median()
    return torch.tensor([f * float(med) for f in factors])
