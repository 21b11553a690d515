"""A graph generator over sampled scene graphs (Meta-Sim's generator for scene grammars).

Each node starts from its type (one-hot) and normalised attributes; `rounds` of message
passing mix in the mean of its parent's, its children's and its siblings' states (mean
aggregation: the result does not depend on the order of siblings, i.e. the network is
permutation-equivariant over them); a head outputs changes to the node's *mutable* attributes
only. The last layer starts at zero, so an untrained generator is the identity (the prior). An
attribute the grammar bounds (`bounds: {length: [5, 14]}`) is changed in logit space between its
bounds, so it can never leave them; a `symmetric` one (a side: lateral) has its magnitude
changed and keeps its sign, so one shared change moves every car toward (or away from) its road.
`per_object=True` skips the message passing: the per-object MLP of the ablation. `turn_periodic`
starts the generator a fraction of a full turn away on every periodic attribute (an unbounded
angle): where Meta-Sim's restarts begin.
"""

from __future__ import annotations

import torch
from torch import nn

from datarena.scenes.graph import ATTRIBUTES, SceneGraphBatch, SceneGraphGrammar

# what one normalised unit of each attribute is (positions in canvas quarters, angles in 90 degrees)
UNIT = {"x": 0.25, "y": 0.25, "t": 0.25, "lateral": 0.05, "gap": 0.05, "length": 0.1, "width": 0.1,
        "angle": None, "heading": None}


PERIODIC = ("angle", "heading")  # in degrees; periodic where the grammar leaves them unbounded


def _units(canvas: int) -> torch.Tensor:
    return torch.tensor([90.0 if UNIT[a] is None else UNIT[a] * canvas for a in ATTRIBUTES])


class GraphGenerator(nn.Module):
    def __init__(self, grammar: SceneGraphGrammar, hidden: int = 64, rounds: int = 2, per_object: bool = False,
                 norm: bool = True):
        super().__init__()
        self.grammar, self.rounds, self.per_object, self.norm = grammar, rounds, per_object, norm
        self.n_types = len(grammar.types)
        a = len(ATTRIBUTES)
        self.register_buffer("units", _units(grammar.canvas))
        self.encode = nn.Sequential(nn.Linear(self.n_types + a, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.update = nn.ModuleList(nn.Sequential(nn.Linear(4 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                                    for _ in range(rounds))
        # the node state is layer-normalised after the encoder and after every round. Without it the state
        # grew ~150x in training (sum |h| per car 17 -> 2,500), so one Adam step of the head turned a heading
        # by hundreds of degrees and periodic attributes never settled (docs/benchmarks.md, issue 33).
        # norm=False is the architecture of generators saved before (they load as they were trained)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds + 1)) if norm else None
        self.head = nn.Linear(hidden, a)
        # per (type, attribute): bounded? and its [low, high] (0, 1 where unbounded)
        order = grammar.order()
        bounds = [[grammar.types[t].bounds.get(attr) for attr in ATTRIBUTES] for t in order]
        self.register_buffer("bounded", torch.tensor([[b is not None for b in row] for row in bounds]))
        self.register_buffer("low", torch.tensor([[b[0] if b else 0.0 for b in row] for row in bounds]))
        self.register_buffer("high", torch.tensor([[b[1] if b else 1.0 for b in row] for row in bounds]))
        self.register_buffer("symmetric", torch.tensor([[a in grammar.types[t].symmetric for a in ATTRIBUTES] for t in order]))
        # periodic: an unbounded angle (a road's direction, a free heading): a restart turns it (`turn`, in units);
        # derived from the grammar, so not saved
        self.register_buffer("periodic", torch.tensor([[a in PERIODIC and a in grammar.types[t].mutable and
                                                        a not in grammar.types[t].bounds for a in ATTRIBUTES] for t in order]),
                             persistent=False)
        self.register_buffer("turn", torch.zeros(len(order), a))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def turn_periodic(self, fraction: float) -> int:
        """Turn every periodic attribute's output by `fraction` of 360 degrees; returns how many
        (type, attribute) pairs are periodic (0: nothing to turn)."""
        with torch.no_grad():
            self.turn += self.periodic.float() * (360.0 * fraction / 90.0)  # angles' unit: 90 degrees
        return int(self.periodic.sum())

    def _relations(self, batch: SceneGraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row-normalised (N, M, M) matrices: to parent, to children, to siblings (same parent)."""
        present = batch.present.float()
        m = batch.parent.shape[1]
        idx = batch.parent.clamp_min(0)
        to_parent = nn.functional.one_hot(idx, m).float() * (batch.parent >= 0).float()[..., None]
        to_parent = to_parent * present[..., None]
        to_children = to_parent.transpose(1, 2)
        same = (batch.parent[:, :, None] == batch.parent[:, None, :]).float() * present[:, :, None] * present[:, None, :]
        to_siblings = same * (1 - torch.eye(m))
        norm = lambda r: r / r.sum(-1, keepdim=True).clamp_min(1.0)  # noqa: E731
        return norm(to_parent), norm(to_children), norm(to_siblings)

    def forward(self, batch: SceneGraphBatch) -> torch.Tensor:
        """New attributes (N, M, A): the sampled ones plus learned changes to the mutable ones."""
        types = nn.functional.one_hot(batch.type_id.clamp_min(0), self.n_types).float()
        z = batch.attrs / self.units
        norm = (lambda i, x: self.norms[i](x)) if self.norms is not None else (lambda i, x: x)  # noqa: E731
        h = norm(0, self.encode(torch.cat([types, z], -1))) * batch.present[..., None]
        if not self.per_object:
            parent, children, siblings = self._relations(batch)
            for i, layer in enumerate(self.update):
                msg = torch.cat([h, parent @ h, children @ h, siblings @ h], -1)
                h = norm(i + 1, h + layer(msg)) * batch.present[..., None]
        ti = batch.type_id.clamp_min(0)
        change = (self.head(h) + self.turn[ti]) * batch.mutable.float()  # normalised units (logits where bounded)
        symmetric = self.symmetric[ti] & batch.mutable
        sign = torch.where(symmetric & (batch.attrs < 0), -1.0, 1.0)
        value = batch.attrs * sign  # the magnitude of a symmetric attribute
        free = value + change * self.units
        low, high = self.low[ti], self.high[ti]
        frac = ((value - low) / (high - low)).clamp(1e-3, 1 - 1e-3)
        inside = low + (high - low) * torch.sigmoid(torch.logit(frac) + change)
        return sign * torch.where(self.bounded[ti] & batch.mutable, inside, free)


def permute_nodes(batch: SceneGraphBatch, perm: torch.Tensor) -> SceneGraphBatch:
    """The same scenes with nodes reordered by `perm` (M,), parent indices remapped (for tests)."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    parent = batch.parent[:, perm]
    parent = torch.where(parent >= 0, inverse[parent.clamp_min(0)], parent)
    return SceneGraphBatch(batch.type_id[:, perm], batch.class_id[:, perm], parent, batch.present[:, perm],
                           batch.attrs[:, perm], batch.mutable[:, perm], batch.keys)
