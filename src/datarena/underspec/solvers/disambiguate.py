"""Choose which target labels to reveal, pick the hypothesis they support, estimate its accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from datarena.errors import BudgetError

EPS = 0.1  # probability that a hypothesis that is right disagrees with one revealed label (noise)
AGREEMENT_PRIOR = 8.0  # pseudo-labels for "rows where diverse hypotheses agree are right"
MIN_DIVERSITY = 0.25  # below this disputed fraction the heads did not split into distinct features: no agreement prior
DISPUTED_REVEALS = 4  # of 5 reveals: up to 4 on disputed rows, the rest on undisputed rows


class Oracle(Protocol):
    """Answers label queries on target rows; raises BudgetError past its budget."""

    budget: int

    def reveal(self, datum_id: int) -> int: ...


@dataclass
class LocalOracle:
    """Reveals from the private labels with the same budget rules as the server (research, benchmarks)."""

    y_target: np.ndarray
    budget: int = 5
    revealed: dict[int, int] = field(default_factory=dict)

    def reveal(self, datum_id: int) -> int:
        datum_id = int(datum_id)
        if datum_id in self.revealed:
            return self.revealed[datum_id]
        if len(self.revealed) >= self.budget:
            raise BudgetError(f"reveal budget of {self.budget} used up")
        if not 0 <= datum_id < len(self.y_target):
            raise BudgetError(f"datum {datum_id} is out of range")
        self.revealed[datum_id] = int(self.y_target[datum_id])
        return self.revealed[datum_id]


@dataclass
class Disambiguation:
    chosen: int
    weights: np.ndarray
    reveals: list[tuple[int, int]]  # (datum_id, class index)
    estimate: float  # estimated target accuracy of the chosen hypothesis
    disagreement_fraction: float


def disambiguate(
    probs: np.ndarray,
    reveal,  # callable: datum_id -> class index
    max_reveals: int,
    val_accuracy: np.ndarray,
    rng: np.random.Generator,
) -> Disambiguation:
    """probs: (H, N, C) hypotheses' target predictions. One query at a time.

    Queries go to the rows the hypotheses (weighted by how well they fit the answers so far)
    dispute most, chosen at random among them so they are also a fair sample for the accuracy
    estimate; the last query checks a row where all hypotheses agree.
    """
    n_hyp, n, n_classes = probs.shape
    hard = probs.argmax(-1)  # (H, N)
    disputed = (hard != hard[:1]).any(0)
    w = np.full(n_hyp, 1.0 / n_hyp)
    reveals: list[tuple[int, int]] = []
    asked = np.zeros(n, dtype=bool)
    for _ in range(max_reveals):
        q = np.zeros((n, n_classes))
        for h in range(n_hyp):
            q[np.arange(n), hard[h]] += w[h]
        score = 1.0 - q.max(1) / w.sum()
        score[asked] = -1.0
        n_disputed_asked = int((asked & disputed).sum())
        undisputed_left = np.flatnonzero(~asked & ~disputed)
        if score.max() > 1e-3 and (n_disputed_asked < DISPUTED_REVEALS or not len(undisputed_left)):
            best = np.flatnonzero(score >= score.max() - 1e-9)
            datum = int(rng.choice(best))
        elif len(undisputed_left):
            datum = int(rng.choice(undisputed_left))
        else:
            datum = int(rng.choice(np.flatnonzero(~asked)))
        try:
            label = int(reveal(datum))
        except BudgetError:
            break
        asked[datum] = True
        reveals.append((datum, label))
        w = w * np.where(hard[:, datum] == label, 1 - EPS, EPS)
        w = w / w.sum()
    # the chosen hypothesis: most supported, ties to the one that fits the labeled data best
    matches = np.array([sum(hard[h, d] == y for d, y in reveals) for h in range(n_hyp)])
    chosen = int(np.lexsort((val_accuracy, matches))[-1])
    f_d = float(disputed.mean())
    in_d = [(d, y) for d, y in reveals if disputed[d]]
    in_a = [(d, y) for d, y in reveals if not disputed[d]]
    md = sum(hard[chosen, d] == y for d, y in in_d)
    ma = sum(hard[chosen, d] == y for d, y in in_a)
    # Where diverse hypotheses agree they are trusted as much as `AGREEMENT_PRIOR` labeled
    # answers at their held-out labeled accuracy; collapsed heads earn no such trust.
    prior = AGREEMENT_PRIOR if n_hyp > 1 and f_d >= MIN_DIVERSITY else 0.0
    av = float(val_accuracy[chosen])
    acc_a = (ma + prior * av + 1) / (len(in_a) + prior + 2)
    acc_d = (md + 1) / (len(in_d) + 2)
    estimate = f_d * acc_d + (1 - f_d) * acc_a
    return Disambiguation(
        chosen=chosen,
        weights=w,
        reveals=reveals,
        estimate=estimate,
        disagreement_fraction=f_d,
    )
