"""Diversity losses: DivDis mutual information and marginal regulariser, D-BAT disagreement."""

from __future__ import annotations

import itertools

import torch


def pairwise_mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """Mean over head pairs of I(y_i; y_j), from probs (K, batch, C) of the heads on one batch."""
    k = probs.shape[0]
    if k < 2:
        return probs.new_zeros(())
    total = probs.new_zeros(())
    pairs = list(itertools.combinations(range(k), 2))
    for i, j in pairs:
        joint = torch.einsum("bc,bd->cd", probs[i], probs[j]) / probs.shape[1]
        marg = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
        total = total + (joint * (torch.log(joint + 1e-8) - torch.log(marg + 1e-8))).sum()
    return total / len(pairs)


def marginal_kl(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Mean over heads of KL(mean prediction || prior label marginal): stops heads collapsing to one class."""
    mean = probs.mean(1)  # (K, C)
    return (mean * (torch.log(mean + 1e-8) - torch.log(prior + 1e-8))).sum(1).mean()


def disagreement_loss(p_new: torch.Tensor, p_old: torch.Tensor) -> torch.Tensor:
    """D-BAT: the probability that the two models agree, averaged over rows (p_old is detached).

    The paper minimises -log P(disagree); that term is unbounded per row, and on these exercises
    (where half the unlabeled rows are correlated) it makes the new model flip every prediction
    and give up the labeled fit. The bounded form keeps "fit the labels, disagree where the
    labels allow it" the optimum.
    """
    return (p_new * p_old).sum(-1).mean()
