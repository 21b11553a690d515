"""Scene-graph grammars (Meta-Sim's probabilistic grammars) and a differentiable top-down renderer.

A grammar is YAML: node types, each with a parent type (`scene` for the root level), a count
of children per parent, a placement relative to its parent, attribute distributions, and
which attributes a learned generator may change (`mutable`):

    placement: along    the node lies on its parent's axis, `t` along it, `lateral` across
               beside   as `along`, pushed out of the parent by its half width + `gap`
               free     anywhere on the canvas (roots): `x`, `y`

Sampling gives a `SceneGraphBatch` of plain tensors, padded to the most nodes of a scene:
type and class ids, parent indices (-1 for roots), a presence mask and the attributes, nodes
in depth order (parents first). Scene i draws from `SeedSequence([seed, i])` only, so any
shard of indices equals the same slice of one big draw. `render_graph` turns a batch into
images, class masks, instance ids and boxes; it is differentiable in every attribute (soft
edges), so gradients reach the mutable ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from datarena.errors import ConfigError
from datarena.scenes.grammar import Count, Dist

SHAPES = ("rect", "disc")
PLACEMENTS = ("free", "along", "beside")
ATTRIBUTES = ("x", "y", "angle", "t", "lateral", "heading", "length", "width", "gap")


class NodeType(BaseModel):
    parent: str = "scene"
    label: str  # the class this node paints in the mask
    count: Count = Field(default_factory=Count)
    placement: Literal["free", "along", "beside"] = "free"
    shape: Literal["rect", "disc"] = "rect"
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    texture: Literal["none", "car", "roof", "canopy", "lanes"] = "none"
    attributes: dict[str, Dist] = Field(default_factory=dict)
    mutable: list[str] = Field(default_factory=list)
    # where a generator may move a mutable attribute: [low, high] (it edits it in logit space there), so
    # that a learned generator cannot shrink objects to nothing or push them off the canvas
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # attributes whose sign is a side (lateral: left or right of the road): a generator edits their magnitude
    # and keeps the sign (bounds then bound the magnitude)
    symmetric: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> NodeType:
        unknown = sorted(set(self.attributes) - set(ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown attribute(s) {unknown}; attributes are {', '.join(ATTRIBUTES)}")
        not_drawn = sorted(set(self.mutable) - set(self.attributes))
        if not_drawn:
            raise ValueError(f"mutable {not_drawn} are not attributes of this type")
        for attr, (low, high) in self.bounds.items():
            if attr not in self.mutable:
                raise ValueError(f"bounds.{attr}: only mutable attributes take bounds (mutable: {self.mutable})")
            if not low < high:
                raise ValueError(f"bounds.{attr}: low {low} must be below high {high}")
            if attr in self.symmetric and low < 0:
                raise ValueError(f"bounds.{attr}: {attr} is symmetric, so its bounds bound its magnitude (low >= 0)")
        if set(self.symmetric) - set(self.mutable):
            raise ValueError(f"symmetric {sorted(set(self.symmetric) - set(self.mutable))} must be mutable attributes")
        return self


class SceneGraphGrammar(BaseModel):
    name: str = "graph"
    description: str = ""
    canvas: int = Field(64, ge=16, le=512)
    background: tuple[float, float, float] = (0.3, 0.45, 0.25)
    noise: float = Field(0.0, ge=0.0)
    classes: list[str]  # mask ids 1..n in this order; 0 = background
    types: dict[str, NodeType]

    @model_validator(mode="after")
    def _graph(self) -> SceneGraphGrammar:
        for name, t in self.types.items():
            if t.parent != "scene" and t.parent not in self.types:
                raise ValueError(f"types.{name}.parent: unknown type {t.parent!r}; types are "
                                 f"{', '.join(self.types)} (or 'scene')")
            if t.label not in self.classes:
                raise ValueError(f"types.{name}.label: {t.label!r} is not in classes {self.classes}")
            if t.parent == "scene" and t.placement != "free":
                raise ValueError(f"types.{name}.placement: a root type must be 'free', not {t.placement!r}")
        for name in self.types:  # a parent chain must end at the scene
            seen, cur = [name], self.types[name].parent
            while cur != "scene":
                if cur in seen:
                    raise ValueError(f"types.{name}.parent: the parents form a cycle ({' -> '.join([*seen, cur])})")
                seen.append(cur)
                cur = self.types[cur].parent
        return self

    def order(self) -> list[str]:
        """Types parents first (depth order)."""
        depth = {}
        for name in self.types:
            d, cur = 0, self.types[name].parent
            while cur != "scene":
                d, cur = d + 1, self.types[cur].parent
            depth[name] = d
        return sorted(self.types, key=lambda n: (depth[n], list(self.types).index(n)))

    def max_nodes(self) -> int:
        total = {}
        for name in self.order():
            t = self.types[name]
            parents = 1 if t.parent == "scene" else total[t.parent]
            total[name] = parents * t.count.max
        return sum(total.values())


def parse_graph_grammar(data: object, label: str = "grammar") -> SceneGraphGrammar:
    try:
        return SceneGraphGrammar.model_validate(data)
    except ValidationError as err:
        lines = [f"{label} is not a valid scene-graph grammar:"]
        lines += [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None


def is_graph_grammar(name_or_path: str | Path) -> bool:
    path = _grammar_path(name_or_path)
    return path is not None and "types" in (yaml.safe_load(path.read_text()) or {})


def _grammar_path(name_or_path: str | Path) -> Path | None:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("datarena.scenes") / "grammars" / f"{name_or_path}.yaml"
    return Path(str(shipped)) if shipped.is_file() else None


def load_graph_grammar(name_or_path: str | Path) -> SceneGraphGrammar:
    path = _grammar_path(name_or_path)
    if path is None:
        raise ConfigError(f"no grammar {name_or_path!r}; see `datarena scenes list`.")
    return parse_graph_grammar(yaml.safe_load(path.read_text()), str(name_or_path))


# ---------------------------------------------------------------- sampling


@dataclass
class SceneGraphBatch:
    """Padded graphs: (N, M) ids and masks, (N, M, A) attributes (A = len(ATTRIBUTES))."""

    type_id: torch.Tensor  # (N, M) long, index into grammar.order(); -1 absent
    class_id: torch.Tensor  # (N, M) long, mask class (1..); 0 absent
    parent: torch.Tensor  # (N, M) long, index of the parent node in the scene, -1 for roots
    present: torch.Tensor  # (N, M) bool
    attrs: torch.Tensor  # (N, M, A) float
    mutable: torch.Tensor  # (N, M, A) bool: what a generator may change
    # (N, 2) long: the (seed, index) each scene was sampled from; its pixel noise is drawn from them, so
    # scene i looks the same in any batch and whatever a generator does to its attributes
    keys: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.type_id)


def sample_graphs(grammar: SceneGraphGrammar, n: int, seed: int, start: int = 0) -> SceneGraphBatch:
    """Scenes start..start+n-1; scene i uses SeedSequence([seed, i]) alone."""
    order, m = grammar.order(), grammar.max_nodes()
    a = len(ATTRIBUTES)
    type_id = np.full((n, m), -1, np.int64)
    class_id = np.zeros((n, m), np.int64)
    parent = np.full((n, m), -1, np.int64)
    attrs = np.zeros((n, m, a), np.float64)
    mutable = np.zeros((n, m, a), bool)
    for row in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, start + row]))
        nodes: dict[str, list[int]] = {}
        k = 0
        for ti, name in enumerate(order):
            t = grammar.types[name]
            parents = [-1] if t.parent == "scene" else nodes.get(t.parent, [])
            nodes[name] = []
            for p in parents:
                for _ in range(int(rng.integers(t.count.min, t.count.max + 1))):
                    type_id[row, k], class_id[row, k], parent[row, k] = ti, grammar.classes.index(t.label) + 1, p
                    for ai, attr in enumerate(ATTRIBUTES):
                        if attr in t.attributes:
                            attrs[row, k, ai] = float(t.attributes[attr].sample(rng, ()))
                            mutable[row, k, ai] = attr in t.mutable
                    nodes[name].append(k)
                    k += 1
    keys = torch.tensor([[seed, start + row] for row in range(n)], dtype=torch.long).reshape(n, 2)
    return SceneGraphBatch(torch.from_numpy(type_id), torch.from_numpy(class_id), torch.from_numpy(parent),
                           torch.from_numpy(type_id >= 0), torch.from_numpy(attrs).float(), torch.from_numpy(mutable),
                           keys)


# ---------------------------------------------------------------- geometry and rendering


def _col(name: str) -> int:
    return ATTRIBUTES.index(name)


def node_geometry(grammar: SceneGraphGrammar, batch: SceneGraphBatch, attrs: torch.Tensor | None = None):
    """Absolute (cx, cy, angle in radians, length, width) of every node, parents first; differentiable."""
    attrs = batch.attrs if attrs is None else attrs
    order = grammar.order()
    n, m, _ = attrs.shape
    c = grammar.canvas / 2
    cx, cy, ang = [None] * m, [None] * m, [None] * m
    for j in range(m):  # nodes are stored parents first
        a = attrs[:, j]
        par = batch.parent[:, j]
        is_root = par < 0
        p = par.clamp_min(0)
        # the parent's geometry (for roots: the canvas centre, angle 0)
        pcx = torch.stack(cx[:j] + [torch.zeros(n)], 1).gather(1, p[:, None])[:, 0] if j else torch.zeros(n)
        pcy = torch.stack(cy[:j] + [torch.zeros(n)], 1).gather(1, p[:, None])[:, 0] if j else torch.zeros(n)
        pang = torch.stack(ang[:j] + [torch.zeros(n)], 1).gather(1, p[:, None])[:, 0] if j else torch.zeros(n)
        pwid = attrs[:, :, _col("width")].gather(1, p[:, None])[:, 0]
        placement = torch.tensor([PLACEMENTS.index(grammar.types[order[t]].placement) if t >= 0 else 0
                                  for t in batch.type_id[:, j].tolist()])
        along = a[:, _col("t")]
        across = a[:, _col("lateral")]
        push = torch.sign(across + 1e-6) * (pwid / 2 + a[:, _col("width")] / 2 + a[:, _col("gap")])
        across = torch.where(placement == PLACEMENTS.index("beside"), across + push, across)
        free = is_root | (placement == PLACEMENTS.index("free"))
        dx = along * torch.cos(pang) - across * torch.sin(pang)
        dy = along * torch.sin(pang) + across * torch.cos(pang)
        cx[j] = torch.where(free, c + a[:, _col("x")], pcx + dx)
        cy[j] = torch.where(free, c + a[:, _col("y")], pcy + dy)
        own = torch.deg2rad(a[:, _col("angle")] + a[:, _col("heading")])
        ang[j] = torch.where(free, own, pang + own)
    return (torch.stack(cx, 1), torch.stack(cy, 1), torch.stack(ang, 1),
            attrs[:, :, _col("length")], attrs[:, :, _col("width")])


def scene_noise(batch: SceneGraphBatch, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) standard normal pixel noise, scene i's drawn from its own (seed, index) key."""
    if batch.keys is None:
        raise ConfigError("this scene batch carries no sampling keys (sample it with sample_graphs) and its grammar "
                          "adds pixel noise, which is drawn from them.")
    out = []
    for key in batch.keys.tolist():
        state = int(np.random.SeedSequence([*key, 0x6E6F6973]).generate_state(1, np.uint64)[0] % (2**63))
        out.append(torch.randn(tuple(shape), generator=torch.Generator().manual_seed(state)))
    return torch.stack(out)


@dataclass
class RenderedGraph:
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
    masks: torch.Tensor  # (N, H, W) long class ids (0 background)
    instances: torch.Tensor  # (N, H, W) long node index + 1 (0 background)
    boxes: torch.Tensor  # (N, M, 4) x0, y0, x1, y1; -1 for absent nodes (as the flat renderer's)


def render_graph(grammar: SceneGraphGrammar, batch: SceneGraphBatch, attrs: torch.Tensor | None = None,
                 softness: float = 0.6, scale: int = 1) -> RenderedGraph:
    """Paint nodes in depth order with soft edges (differentiable in every attribute).

    `scale` renders the same scenes at `scale` pixels per canvas unit (boxes stay in canvas units).
    """
    order = grammar.order()
    size = grammar.canvas * scale
    cx, cy, ang, length, width = node_geometry(grammar, batch, attrs)
    n, m = cx.shape
    ys, xs = torch.meshgrid((torch.arange(size) + 0.5) / scale, (torch.arange(size) + 0.5) / scale, indexing="ij")
    image = torch.tensor(grammar.background).view(1, 3, 1, 1).expand(n, 3, size, size).clone()
    covers = []
    for j in range(m):
        ti = batch.type_id[:, j]
        if (ti < 0).all():
            covers.append(torch.zeros(n, size, size))
            continue
        dx, dy = xs[None] - cx[:, j, None, None], ys[None] - cy[:, j, None, None]
        c, s = torch.cos(ang[:, j])[:, None, None], torch.sin(ang[:, j])[:, None, None]
        u, v = dx * c + dy * s, -dx * s + dy * c  # node frame: u along, v across
        half_l, half_w = (length[:, j] / 2)[:, None, None], (width[:, j] / 2)[:, None, None]
        shape_is_disc = torch.tensor([grammar.types[order[t]].shape == "disc" if t >= 0 else False for t in ti.tolist()])
        soft = softness / scale  # edge width in pixels
        rect = torch.sigmoid((half_l - u.abs()) / soft) * torch.sigmoid((half_w - v.abs()) / soft)
        disc = torch.sigmoid((half_w - torch.sqrt(u**2 + v**2 + 1e-6)) / soft)
        alpha = torch.where(shape_is_disc[:, None, None], disc, rect) * batch.present[:, j, None, None]
        colour = torch.stack([torch.tensor(grammar.types[order[t]].color if t >= 0 else (0.0, 0.0, 0.0))
                              for t in ti.tolist()])[:, :, None, None].expand(n, 3, size, size)
        colour = _texture(grammar, order, ti, colour, u, v, half_l, half_w)
        image = image * (1 - alpha[:, None]) + colour * alpha[:, None]
        covers.append(alpha.detach())
    if grammar.noise:
        image = image + grammar.noise * scene_noise(batch, image.shape[1:])
    # the topmost node with coverage > 0.5 owns a pixel (later nodes are painted above)
    cover = torch.stack(covers, 1)
    hard = (cover > 0.5).float() * (torch.arange(m) + 1).view(1, m, 1, 1)
    top = hard.amax(1).long()  # node index + 1, 0 = background
    cls = torch.cat([torch.zeros(n, 1, dtype=torch.long), batch.class_id], 1)
    masks = cls.gather(1, top.view(n, -1)).view(n, size, size)
    c = grammar.canvas
    x0 = (cx - 0.5 * (length.abs() * torch.cos(ang).abs() + width.abs() * torch.sin(ang).abs())).clamp(0, c)
    x1 = (cx + 0.5 * (length.abs() * torch.cos(ang).abs() + width.abs() * torch.sin(ang).abs())).clamp(0, c)
    y0 = (cy - 0.5 * (length.abs() * torch.sin(ang).abs() + width.abs() * torch.cos(ang).abs())).clamp(0, c)
    y1 = (cy + 0.5 * (length.abs() * torch.sin(ang).abs() + width.abs() * torch.cos(ang).abs())).clamp(0, c)
    boxes = torch.where(batch.present[..., None], torch.stack([x0, y0, x1, y1], -1), -1.0)
    return RenderedGraph(image.clamp(0, 1), masks, top, boxes.detach())


def _texture(grammar, order, ti, colour, u, v, half_l, half_w):
    """Small procedural sprites: a car's windscreen, a roof's ridge, a canopy's shading, lane marks."""
    kinds = [grammar.types[order[t]].texture if t >= 0 else "none" for t in ti.tolist()]
    rows = []
    for k, kind in enumerate(kinds):
        c = colour[k]
        if kind == "car":  # a dark windscreen band across the front third
            band = ((u[k] > half_l[k] * 0.2) & (u[k] < half_l[k] * 0.55)).float()
            c = c * (1 - 0.6 * band)
        elif kind == "roof":  # a ridge line along the middle
            c = c * (0.8 + 0.4 * torch.exp(-(v[k] ** 2) / 0.8))
        elif kind == "canopy":  # darker towards the rim
            r = torch.sqrt(u[k] ** 2 + v[k] ** 2 + 1e-6) / half_w[k].clamp_min(1e-3)
            c = c * (1.15 - 0.45 * r.clamp(0, 1))
        elif kind == "lanes":  # a dashed centre line
            dash = ((v[k].abs() < 0.6) & (torch.remainder(u[k], 6.0) < 3.0)).float()
            c = c * (1 - dash) + dash * 0.9
        rows.append(c)
    return torch.stack(rows)


def render_batches(grammar: SceneGraphGrammar, n: int, seed: int, transform=None, batch_size: int = 64):
    """Scenes 0..n-1 in batches: yields (start, images (B, H, W, 3) uint8, masks (B, H, W) uint8, the
    RenderedGraph). `transform(batch) -> attrs` rewrites the sampled attributes first (a learned generator)."""
    for start in range(0, n, batch_size):
        batch = sample_graphs(grammar, min(batch_size, n - start), seed, start)
        with torch.no_grad():
            r = render_graph(grammar, batch, transform(batch) if transform is not None else None)
        images = (r.images.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        yield start, images, r.masks.numpy().astype(np.uint8), r


def write_graph_scenes(grammar: SceneGraphGrammar, n: int, seed: int, out: str | Path, force: bool = False,
                       batch_size: int = 64, transform=None, meta: dict | None = None) -> Path:
    """Render n scenes to the VOC layout (image, class mask) with meta.json, instances and boxes (npz).

    `transform(batch) -> attrs` rewrites the sampled attributes first (a learned graph generator)."""
    import datarena
    from datarena.data.checksums import atomic_directory
    from datarena.data.segmentation import finish_voc, make_voc_dirs, write_pair

    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}.")
    classes = ("background", *grammar.classes)
    with atomic_directory(out, force=force) as tmp:
        make_voc_dirs(tmp)
        names, inst, boxes = [], [], []
        for start, images, masks, r in render_batches(grammar, n, seed, transform, batch_size):
            for i in range(len(images)):
                name = f"{start + i:06d}"
                write_pair(tmp, name, images[i], masks[i])
                names.append(name)
            inst.append(r.instances.numpy().astype(np.int16))
            boxes.append(r.boxes.numpy())  # (B, max_nodes, 4): every batch has the grammar's node count
        np.savez_compressed(tmp / "instances.npz", instances=np.concatenate(inst), boxes=np.concatenate(boxes))
        # meta.json sorts its keys: the types' order (which decides how scenes are sampled) is kept apart
        finish_voc(tmp, names, classes, {"generator": "datarena.scenes.graph", "grammar": grammar.model_dump(mode="json"),
                                         "type_order": list(grammar.types),
                                         "seed": seed, "n": n, "datarena_version": datarena.__version__, **(meta or {})})
    return Path(out)
