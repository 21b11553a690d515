"""The Meta-Sim generator: reads a sampled scene's attributes, outputs new mutable attributes.

Structure (number of objects) and classes stay fixed; the generator rewrites the continuous
attributes named in `MUTABLE`. Attributes are normalised (positions by the canvas half-size,
rotation by 180 degrees, scale by log) so one network serves any canvas; positions and log-scale
pass through tanh, so no learned object ever leaves the canvas.

By default the generator does not read the object's class: the MMD compares class-blind image
features, so a class-conditional generator could lower it by making one digit look like another
(a 6 turned into a 9) and the task loss, whose offset is shared by all classes, corrects that
only slowly. `class_conditional=True` lets it read the class where the target's changes depend
on it. Its output
distribution is Gaussian around the rewritten attributes, with a fixed exploration std in
normalised units; the task loss uses it for the score-function estimator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from datarena.scenes.grammar import ATTRS, SceneBatch

MUTABLE = ("x", "y", "rotation", "scale")
_IDX = [ATTRS.index(a) for a in MUTABLE]


def normalise(attrs: torch.Tensor, canvas: int) -> torch.Tensor:
    half = canvas / 2.0
    x, y, rot, scale = (attrs[..., i] for i in _IDX)
    return torch.stack([(x - half) / half, (y - half) / half, rot / 180.0, torch.log(scale.clamp_min(1e-3))], -1)


def denormalise(z: torch.Tensor, canvas: int) -> torch.Tensor:
    half = canvas / 2.0
    return torch.stack([z[..., 0] * half + half, z[..., 1] * half + half, z[..., 2] * 180.0, torch.exp(z[..., 3])], -1)


class SceneGenerator(nn.Module):
    def __init__(self, canvas: int, hidden: int = 64, num_classes: int = 10, class_conditional: bool = False):
        super().__init__()
        self.canvas = canvas
        self.num_classes = num_classes
        self.class_conditional = class_conditional
        self.net = nn.Sequential(
            nn.Linear(len(MUTABLE) + num_classes, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, len(MUTABLE)),
        )

    def mean_normalised(self, batch: SceneBatch) -> torch.Tensor:
        """(N, K, len(MUTABLE)) generator output in normalised units."""
        z = normalise(batch.attrs.float(), self.canvas)
        onehot = nn.functional.one_hot(batch.classes.clamp_min(0), self.num_classes).float()
        if not self.class_conditional:
            onehot = torch.zeros_like(onehot)
        out = z + self.net(torch.cat([z, onehot], -1))
        # positions stay on the canvas and scale within [1/e, e]; rotation is periodic and free
        bounded = torch.tanh(out)
        return torch.stack([bounded[..., 0], bounded[..., 1], out[..., 2], bounded[..., 3]], -1)

    def apply(self, batch: SceneBatch, normalised: torch.Tensor) -> SceneBatch:
        """A batch whose mutable attributes are replaced by `normalised` (gradients flow)."""
        attrs = batch.attrs.float().clone()
        attrs[..., _IDX] = denormalise(normalised, self.canvas)
        return batch.with_attrs(attrs)

    def forward(self, batch: SceneBatch) -> SceneBatch:
        return self.apply(batch, self.mean_normalised(batch))


def pretrain_identity(gen: SceneGenerator, sample, steps: int = 200, lr: float = 3e-3) -> float:
    """Train the generator to reproduce its input, so learning starts at the prior. Returns the final loss."""
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    loss = torch.tensor(0.0)
    for step in range(steps):
        batch = sample(step)
        target = normalise(batch.attrs.float(), gen.canvas)
        loss = (gen.mean_normalised(batch) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def circular_mean_degrees(angles: torch.Tensor) -> float:
    rad = angles.double() * (math.pi / 180.0)
    return float(torch.atan2(torch.sin(rad).mean(), torch.cos(rad).mean()) * (180.0 / math.pi))
