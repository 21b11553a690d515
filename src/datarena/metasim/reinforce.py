"""The task term's estimator, shared by both Meta-Sim trainers (digits and scene graphs)."""

from __future__ import annotations

import numpy as np
import torch


def reinforce(rewards: list[float], log_probs: list[torch.Tensor], baseline: float | None) -> torch.Tensor:
    """The score-function surrogate: -(R - b) log p(candidate), averaged; b is the moving baseline
    (the candidates' mean reward on the first step). Its gradient is the REINFORCE estimate."""
    b = baseline if baseline is not None else float(np.mean(rewards))
    return -sum((r - b) * lp for r, lp in zip(rewards, log_probs, strict=True)) / len(rewards)


def moving_baseline(baseline: float | None, rewards: list[float], momentum: float) -> float:
    mean = float(np.mean(rewards))
    return mean if baseline is None else momentum * baseline + (1 - momentum) * mean
