"""The task network of the Meta-Sim MNIST experiments: a small CNN digit classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaskNet(nn.Module):
    """Inputs pooled to 32x32, two strided conv blocks, a 4x4 map flattened (position-aware), MLP head."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 32:
            x = F.adaptive_avg_pool2d(x, 32)
        return self.head(self.features(x))


def train_task_net(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int,
                   batch_size: int = 128, lr: float = 2e-3) -> TaskNet:
    """Train a fresh TaskNet on (N,1,H,W) images in [0,1] for a fixed number of Adam steps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TaskNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    images, labels = images.detach(), labels.detach()
    n = len(images)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return net


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((net(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
    return correct / max(len(images), 1)
