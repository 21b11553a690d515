"""Scene grammars: a YAML-loadable description of a distribution over digit scenes.

A grammar fixes the canvas, the background, how many objects a scene holds, and per object
its class, its appearance (a real MNIST digit of that class from a chosen split) and its
continuous attributes (centre x/y in pixels, rotation in degrees counter-clockwise, scale with
1.0 = 28 px, intensity), each `fixed`, `uniform`, `normal` or a `mixture` of those.

Sampling gives a `SceneBatch` of plain tensors. Scenes are drawn in chunks of `CHUNK` whose
random streams come from `SeedSequence([seed, chunk])`, so any slice of scene indices (a
shard) is identical to the same slice of one big draw.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from datarena.errors import ConfigError

ATTRS = ("x", "y", "rotation", "scale", "intensity")
CHUNK = 256
DIGIT_SIZE = 28


class Dist(BaseModel):
    """A distribution over one continuous attribute. A bare number means `fixed`."""

    kind: Literal["fixed", "uniform", "normal", "mixture"] = "fixed"
    value: float | None = None
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: float | None = None
    components: list[Dist] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _number_is_fixed(cls, v: object) -> object:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return {"kind": "fixed", "value": float(v)}
        return v

    @model_validator(mode="after")
    def _complete(self) -> Dist:
        need = {"fixed": ("value",), "uniform": ("low", "high"), "normal": ("mean", "std"), "mixture": ()}[self.kind]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"a {self.kind} distribution needs {', '.join(missing)}")
        if self.kind == "uniform" and self.low > self.high:
            raise ValueError(f"uniform needs low <= high, got low={self.low}, high={self.high}")
        if self.kind == "normal" and self.std < 0:
            raise ValueError(f"normal needs std >= 0, got {self.std}")
        if self.kind == "mixture":
            if not self.components:
                raise ValueError("a mixture needs at least one entry in components")
            if self.weights and len(self.weights) != len(self.components):
                raise ValueError(f"{len(self.weights)} weights for {len(self.components)} components")
            if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
                raise ValueError("mixture weights must be non-negative with a positive sum")
        return self

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(shape, self.value, dtype=np.float64)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high, size=shape)
        if self.kind == "normal":
            return rng.normal(self.mean, self.std, size=shape)
        w = np.asarray(self.weights or [1.0] * len(self.components), dtype=np.float64)
        which = rng.choice(len(self.components), size=shape, p=w / w.sum())
        draws = np.stack([c.sample(rng, shape) for c in self.components])
        return np.take_along_axis(draws, which[None], 0)[0]

    def mean_value(self) -> float:
        if self.kind == "fixed":
            return self.value
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "normal":
            return self.mean
        w = np.asarray(self.weights or [1.0] * len(self.components), dtype=np.float64)
        return float(sum(wi * c.mean_value() for wi, c in zip(w / w.sum(), self.components, strict=True)))


class ObjectSpec(BaseModel):
    classes: list[int] = Field(default_factory=lambda: list(range(10)))
    class_weights: list[float] = Field(default_factory=list)
    split: Literal["train", "heldout", "val", "test"] = "train"
    x: Dist
    y: Dist
    rotation: Dist = Dist(value=0.0)
    scale: Dist = Dist(value=1.0)
    intensity: Dist = Dist(value=1.0)

    @field_validator("classes")
    @classmethod
    def _digits(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 <= c <= 9 for c in v):
            raise ValueError(f"classes must be a non-empty list of digits 0-9, got {v}")
        return v

    @model_validator(mode="after")
    def _weights(self) -> ObjectSpec:
        if self.class_weights and len(self.class_weights) != len(self.classes):
            raise ValueError(f"{len(self.class_weights)} class_weights for {len(self.classes)} classes")
        return self


class Count(BaseModel):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _order(self) -> Count:
        if self.min > self.max:
            raise ValueError(f"objects.min ({self.min}) exceeds objects.max ({self.max})")
        return self


class Background(BaseModel):
    intensity: Dist = Dist(value=0.0)
    noise: float = Field(0.0, ge=0.0, description="std of per-pixel Gaussian noise")


class SceneGrammar(BaseModel):
    """A distribution over scenes (see the module docstring)."""

    name: str
    description: str = ""
    canvas: int = Field(32, ge=8, le=1024)
    background: Background = Background()
    objects: Count = Count()
    object: ObjectSpec
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    ignore_band: tuple[float, float] | None = None  # coverage in [lo, hi) -> 255 in masks

    @property
    def max_objects(self) -> int:
        return self.objects.max

    def sample(self, n: int, seed: int, start: int = 0, mnist_dir: str | None = None) -> SceneBatch:
        """Scenes start .. start+n-1 of the stream of this grammar and seed."""
        if n < 0 or start < 0:
            raise ConfigError(f"need n >= 0 and start >= 0, got n={n}, start={start}")
        bank = texture_bank(self.object.split, mnist_dir)
        first, last = start // CHUNK, (start + n - 1) // CHUNK if n else start // CHUNK - 1
        parts = [self._sample_chunk(seed, c, bank) for c in range(first, last + 1)]
        if not parts:
            return SceneBatch.empty(self.max_objects)
        batch = SceneBatch.cat(parts)
        offset = start - first * CHUNK
        return batch[offset : offset + n]

    def _sample_chunk(self, seed: int, chunk: int, bank: TextureBank) -> SceneBatch:
        rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
        k = self.max_objects
        shape = (CHUNK, k)
        count = rng.integers(self.objects.min, self.objects.max + 1, size=CHUNK)
        present = np.arange(k)[None, :] < count[:, None]
        spec = self.object
        w = np.asarray(spec.class_weights or [1.0] * len(spec.classes), dtype=np.float64)
        classes = np.asarray(spec.classes)[rng.choice(len(spec.classes), size=shape, p=w / w.sum())]
        u = rng.random(shape)
        sizes = bank.class_sizes[classes]
        texture = bank.class_offsets[classes] + np.minimum((u * sizes).astype(np.int64), sizes - 1)
        attrs = np.stack([getattr(spec, a).sample(rng, shape) for a in ATTRS], axis=-1)
        background = self.background.intensity.sample(rng, (CHUNK,))
        noise_seed = rng.integers(0, 2**62, size=CHUNK)
        return SceneBatch(
            classes=torch.from_numpy(np.where(present, classes, -1)),
            texture=torch.from_numpy(np.where(present, bank.order[texture], 0)),
            attrs=torch.from_numpy(attrs.astype(np.float32)),
            background=torch.from_numpy(background.astype(np.float32)),
            noise=torch.full((CHUNK,), float(self.background.noise)),
            noise_seed=torch.from_numpy(noise_seed),
        )


@dataclass
class SceneBatch:
    """N scenes of up to K objects as tensors; absent objects have class -1."""

    classes: torch.Tensor  # (N, K) long
    texture: torch.Tensor  # (N, K) long: index into the grammar's TextureBank
    attrs: torch.Tensor  # (N, K, len(ATTRS)) float: x, y, rotation, scale, intensity
    background: torch.Tensor  # (N,) float
    noise: torch.Tensor  # (N,) float: std of background noise
    noise_seed: torch.Tensor  # (N,) long

    @property
    def present(self) -> torch.Tensor:
        return self.classes >= 0

    def __len__(self) -> int:
        return self.classes.shape[0]

    def __getitem__(self, index) -> SceneBatch:
        return SceneBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def with_attrs(self, attrs: torch.Tensor) -> SceneBatch:
        return replace(self, attrs=attrs)

    def to(self, device: torch.device | str) -> SceneBatch:
        """The same scenes with every tensor on `device` (render them there)."""
        return SceneBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def attr(self, name: str) -> torch.Tensor:
        return self.attrs[..., ATTRS.index(name)]

    @staticmethod
    def cat(parts: list[SceneBatch]) -> SceneBatch:
        return SceneBatch(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SceneBatch)})

    @staticmethod
    def empty(k: int) -> SceneBatch:
        return SceneBatch(
            classes=torch.zeros(0, k, dtype=torch.long), texture=torch.zeros(0, k, dtype=torch.long),
            attrs=torch.zeros(0, k, len(ATTRS)), background=torch.zeros(0), noise=torch.zeros(0),
            noise_seed=torch.zeros(0, dtype=torch.long),
        )


@dataclass(frozen=True)
class TextureBank:
    """MNIST digits of one split as float textures in [0, 1], grouped by class."""

    split: str
    textures: torch.Tensor  # (T, 28, 28)
    labels: np.ndarray  # (T,)
    order: np.ndarray  # texture indices sorted by class
    class_offsets: np.ndarray  # (10,) start of each class in `order`
    class_sizes: np.ndarray  # (10,)


@functools.lru_cache(maxsize=8)
def _bank(split: str, mnist_dir: str | None) -> TextureBank:
    from datarena.data.sources import load_mnist_digits

    images, labels = load_mnist_digits(mnist_dir, split)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=10)
    return TextureBank(
        split=split, textures=torch.from_numpy(images), labels=labels, order=order,
        class_offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]), class_sizes=sizes,
    )


def texture_bank(split: str, mnist_dir: str | None = None) -> TextureBank:
    mnist_dir = mnist_dir or os.environ.get("DATARENA_MNIST_DIR") or None
    return _bank(split, mnist_dir)


# ------------------------------------------------------------------ loading



def shipped_grammars() -> list[str]:
    folder = resources.files("datarena.scenes") / "grammars"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_grammar(name_or_path: str | Path) -> SceneGrammar:
    """A shipped grammar by name (see `shipped_grammars()`) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"grammar file {path} does not exist.")
        text, label = path.read_text(), str(path)
    else:
        folder = resources.files("datarena.scenes") / "grammars"
        candidate = folder / f"{name_or_path}.yaml"
        if not candidate.is_file():
            raise ConfigError(f"no grammar named {name_or_path!r}; shipped: {', '.join(shipped_grammars())}, or pass a YAML file.")
        text, label = candidate.read_text(), f"shipped grammar {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} is not valid YAML: {exc}") from exc
    return parse_grammar(data, label)


def parse_grammar(data: object, label: str = "grammar") -> SceneGrammar:
    if not isinstance(data, dict):
        raise ConfigError(f"{label} must be a mapping with name, canvas, objects, object.")
    if "types" in data:
        raise ConfigError(f"{label} is a scene-graph grammar (it has `types`): load it with "
                          f"datarena.scenes.graph.load_graph_grammar; `datarena scenes render` takes both kinds.")
    try:
        return SceneGrammar.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{label} is invalid: {problems}") from None
