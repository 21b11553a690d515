"""Training of the hypotheses: ERM, DivDis (K heads, one network), D-BAT (models in sequence)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datarena.underspec.solvers.losses import (
    disagreement_loss,
    marginal_kl,
    pairwise_mutual_information,
)
from datarena.underspec.solvers.models import (
    BlockHeads,
    MultiHead,
    feature_blocks,
    image_regions,
    make_model,
)


@dataclass
class TrainConfig:
    steps: int = 300
    batch_labeled: int = 64
    batch_unlabeled: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    n_heads: int = 2
    lambda_mi: float = 10.0
    lambda_reg: float = 1.0
    lambda_dbat: float = 1.0
    dbat_models: int = 3  # the first is ERM; with only two, the second may pick the other simple cue
    restarts: int = 4  # divdis: independent runs (alternating trunks with arch="both")
    warmup: int = 0  # steps of labeled-only training before the diversity terms switch on
    diversity: str = "target"  # rows divdis's diversity terms see: "target" or "mixed" (half target, half unlabeled)
    dbat_diversity: str = "mixed"  # rows on which dbat's later models disagree with the earlier ones
    arch: str = "both"  # image trunk: "flat" (position-aware), "halves" (side-blind pairs), "pool", "both" (flat and halves, alternating)
    pool_restarts: bool = True  # divdis: keep every restart's heads as hypotheses (else the most independent run)
    # divdis on images: relabel the target rows by networks refitted on the labeled rows plus the
    # chosen labels of the other folds (cross-fitting; refit_labels). 0 = submit the chosen head's labels
    refit_folds: int = 2
    refit_min_rows: int = 100  # fewer target rows: a fold teaches less than the chosen head knows (999: 40)
    # divdis on images with fewer labeled rows than this: also one linear head per image half
    # (`fit_block_heads`), beside the restarts. From 40 labels (999) the CNN restarts read the face
    # worse than a linear model of the right half does; with hundreds (the digit exercises) the
    # half readers only add reproduced competitors (docs/solvers.md, "Eighth round"). 0: never
    region_heads_below: int = 100
    extra: dict = field(default_factory=dict)


@dataclass
class Data:
    """Tensors of one exercise, standardised; labels mapped to 0..C-1."""

    x_lab: torch.Tensor
    y_lab: torch.Tensor
    x_unl: torch.Tensor  # unlabeled rows + target rows (looking at the target set is allowed)
    x_tgt: torch.Tensor
    n_classes: int

    @property
    def prior(self) -> torch.Tensor:
        counts = torch.bincount(self.y_lab, minlength=self.n_classes).float() + 1
        return counts / counts.sum()


def _batches(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (size,), generator=gen)


def _diversity_batch(data: Data, size: int, gen: torch.Generator, mode: str = "mixed") -> torch.Tensor:
    """Rows for the diversity terms. "target": target rows only, where the spurious cue is at chance,
    so the real and the spurious feature are independent there whatever the unlabeled mix rate;
    "mixed": half target rows, half unlabeled rows."""
    if mode == "target":
        return data.x_tgt[_batches(len(data.x_tgt), size, gen)]
    half = size // 2
    return torch.cat([data.x_tgt[_batches(len(data.x_tgt), half, gen)],
                      data.x_unl[_batches(len(data.x_unl), size - half, gen)]])


def _ce_heads(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k = logits.shape[0]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k))


def train_multihead(data: Data, cfg: TrainConfig, diversify: bool, gen: torch.Generator, n_heads: int | None = None,
                    arch: str | None = None) -> MultiHead:
    """ERM when diversify is False (one head); DivDis otherwise."""
    k = (n_heads or cfg.n_heads) if diversify else 1
    model = make_model(tuple(data.x_lab.shape[1:]), data.n_classes, k, arch or "flat")
    # images in channels-last order, one pass for both batches: a step 1.36-1.40x faster on 2 CPU
    # threads than two passes in the default order (benchmarks/bench_solver_step.py)
    layout = torch.channels_last if data.x_lab.ndim == 4 else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    prior = data.prior
    model.train()
    for step in range(cfg.steps):
        bl = _batches(len(data.x_lab), cfg.batch_labeled, gen)
        x = data.x_lab[bl]
        diverse = diversify and step >= cfg.warmup
        if diverse:  # one forward pass over the labeled and the diversity rows (no layer mixes rows)
            x = torch.cat([x, _diversity_batch(data, cfg.batch_unlabeled, gen, cfg.diversity)])
        logits = model(x.contiguous(memory_format=layout))
        loss = _ce_heads(logits[:, : len(bl)], data.y_lab[bl])
        if diverse:
            probs = logits[:, len(bl):].softmax(-1)
            loss = loss + cfg.lambda_mi * pairwise_mutual_information(probs) + cfg.lambda_reg * marginal_kl(probs, prior)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


def refit_labels(data: Data, labels: torch.Tensor, folds: int, cfg: TrainConfig, gen: torch.Generator,
                 arch: str, order: np.ndarray) -> torch.Tensor:
    """Target-row probabilities (N, C) from networks refitted on the chosen labels, cross-fitted.

    The target rows are split into `folds` parts (`order`: a permutation of the rows); each part is
    predicted by a one-head network (`arch`) trained from scratch, without a diversity term, on
    the labeled rows plus the other parts' target rows with `labels` (the chosen hypothesis's, the
    answers in). On the target rows the spurious cue is at chance, so those rows can only be fitted
    through the chosen feature, and a row is never predicted by a network that saw its own label:
    the refit keeps the feature and drops the chosen head's row-level mistakes instead of
    memorising them (13: 0.71 -> 0.89, 0.81 -> 0.92 on development seeds; docs/solvers.md)."""
    n = len(data.x_tgt)
    part = np.empty(n, dtype=np.int64)
    part[order] = np.arange(n) % folds
    part_t = torch.from_numpy(part)
    out = torch.zeros(n, data.n_classes)
    for f in range(folds):
        train, held = part_t != f, part_t == f
        fold = Data(x_lab=torch.cat([data.x_lab, data.x_tgt[train]]), y_lab=torch.cat([data.y_lab, labels[train]]),
                    x_unl=data.x_unl, x_tgt=data.x_tgt, n_classes=data.n_classes)
        model = train_multihead(fold, cfg, diversify=False, gen=gen, arch=arch)
        out[held] = torch.from_numpy(head_probs([model], data.x_tgt[held])[0])
    return out


BLOCK_C = 1.0  # inverse L2 strength of the block heads' logistic regression (sklearn's C)
SELF_TRAIN_ROUNDS = 2  # block heads: refits on the labeled rows plus confidently pseudo-labeled unlabeled/target rows
SELF_TRAIN_CONFIDENCE = 0.9


def _fit_logistic(head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> None:
    """L2-regularised multinomial logistic regression to convergence (full-batch L-BFGS)."""
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")
    l2 = 1.0 / (2.0 * BLOCK_C * len(x))

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def fit_block_heads(data: Data, n_heads: int) -> BlockHeads:
    """One linear head per feature block, fitted on the labeled rows, then refitted with the
    unlabeled and target rows it labels confidently (self-training: the block's cue, seen on many
    more rows). The diversity comes from the blocks, so no diversity term is needed. Blocks: for
    vectors `feature_blocks` of the target rows (`n_heads` of them), for images the four halves
    (`image_regions`)."""
    if data.x_tgt.ndim > 2:
        blocks = image_regions(tuple(data.x_tgt.shape[1:]))
    else:
        blocks = feature_blocks(data.x_tgt, n_heads)
    model = BlockHeads(blocks, data.n_classes)
    with torch.enable_grad():
        for i, head in enumerate(model.heads):
            cols = getattr(model, f"cols{i}")
            x_lab, x_unl = data.x_lab.flatten(1)[:, cols].double(), data.x_unl.flatten(1)[:, cols].double()
            head.double()
            _fit_logistic(head, x_lab, data.y_lab)
            for _ in range(SELF_TRAIN_ROUNDS):
                with torch.no_grad():
                    p = head(x_unl).softmax(-1)
                sure = p.max(-1).values > SELF_TRAIN_CONFIDENCE
                _fit_logistic(head, torch.cat([x_lab, x_unl[sure]]), torch.cat([data.y_lab, p.argmax(-1)[sure]]))
            head.float()
    model.eval()
    return model


def train_dbat(data: Data, cfg: TrainConfig, gen: torch.Generator) -> list[MultiHead]:
    """D-BAT: model m agrees with the labels and disagrees with models 1..m-1 on unlabeled rows."""
    models: list[MultiHead] = [train_multihead(data, cfg, diversify=False, gen=gen)]
    for _ in range(1, cfg.dbat_models):
        model = make_model(tuple(data.x_lab.shape[1:]), data.n_classes, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        model.train()
        for step in range(cfg.steps):
            bl = _batches(len(data.x_lab), cfg.batch_labeled, gen)
            loss = _ce_heads(model(data.x_lab[bl]), data.y_lab[bl])
            if step < cfg.warmup:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                continue
            xu = _diversity_batch(data, cfg.batch_unlabeled, gen, cfg.dbat_diversity)
            p_new = model(xu)[0].softmax(-1)
            with torch.no_grad():
                olds = [m(xu)[0].softmax(-1) for m in models]
            loss = loss + cfg.lambda_dbat * sum(disagreement_loss(p_new, p) for p in olds) / len(olds)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        models.append(model)
    return models


def hard_mutual_information(probs: np.ndarray) -> float:
    """Mean pairwise mutual information (nats) of the heads' hard predictions, probs (H, N, C)."""
    hard = probs.argmax(-1)
    h, _, c = probs.shape
    total, pairs = 0.0, 0
    for i in range(h):
        for j in range(i + 1, h):
            joint = np.zeros((c, c))
            np.add.at(joint, (hard[i], hard[j]), 1.0)
            joint /= joint.sum()
            outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
            nz = joint > 0
            total += float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())
            pairs += 1
    return total / max(pairs, 1)


@torch.no_grad()
def head_probs(models: list[MultiHead], x: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """Probabilities of every hypothesis (head) on x: (H, N, C)."""
    outs = []
    for m in models:
        parts = [m(x[i : i + chunk]).softmax(-1) for i in range(0, len(x), chunk)]
        outs.append(torch.cat(parts, 1))
    return torch.cat(outs, 0).numpy()
