"""The ImageNet normalisation every backbone of the evaluator expects."""

from __future__ import annotations

import torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> ImageNet-normalised, as the backbones expect."""
    return (x - MEAN.to(x.device)) / STD.to(x.device)
