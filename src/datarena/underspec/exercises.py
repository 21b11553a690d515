"""Generators of the hackathon42 exercises: real digits + a seed -> ExerciseBundle.

Every exercise is built the same way. A pool of source images of the exercise's
classes is shuffled; each pool image is the *core* of one row (its class is the
label). Rows are split 20% labeled / 60% unlabeled / 20% target. Each row also
gets a *spurious* class: equal to the label on correlated rows, another class on
conflicting rows. Labeled rows are all correlated; a fraction `mix_rate` of the
unlabeled rows conflicts; the target set is random pairs, exactly half
conflicting, so the spurious cue is at chance there. The generator then draws the
spurious feature (second digit, constant image, uniform colour, noise level,
vehicle, caption word) from the spurious class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datarena import __version__
from datarena.data import sources
from datarena.data.bundle import CONFLICTING, CORRELATED, ExerciseBundle
from datarena.errors import ConfigError, SourceNotFoundError
from datarena.underspec.suite import ExerciseSpec

LABELED, UNLABELED, TARGET = 0, 1, 2
NOISE_STD = 0.02
EMBED_DIM = 198
EMBED_SEED = 20221014  # fixed: the embedding map is part of the exercise definition


@dataclass(frozen=True)
class SourceConfig:
    """Where real data comes from; None means the embedded default (or the env variable)."""

    mnist_dir: str | None = None
    cifar_dir: str | None = None
    faces_dir: str | None = None
    face_attribute: str = "Smiling"

    def mnist(self) -> sources.ImageSource:
        return sources.load_mnist(self.mnist_dir)

    def cifar(self) -> sources.ImageSource:
        return sources.load_cifar10(self.cifar_dir)

    def faces(self) -> sources.ImageSource:
        return sources.load_faces(self.faces_dir, attribute=self.face_attribute)


@dataclass
class RowPlan:
    """Per-row split, label and spurious class, shared by every generator."""

    split: np.ndarray  # (n,) LABELED / UNLABELED / TARGET
    core: np.ndarray  # (n,) index into the source
    label: np.ndarray  # (n,) class of the core image
    spurious: np.ndarray  # (n,) class the spurious feature encodes
    conflict: np.ndarray  # (n,) bool


def exercise_rng(spec: ExerciseSpec, seed: int) -> np.random.Generator:
    """Per-exercise stream: a suite and a single `generate exercise` give the same arrays."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), spec.seed_key]))


def split_sizes(n: int) -> tuple[int, int, int]:
    n_lab = int(round(0.2 * n))
    n_tgt = int(round(0.2 * n))
    return n_lab, n - n_lab - n_tgt, n_tgt


def plan_rows(
    pool: np.ndarray,
    pool_labels: np.ndarray,
    classes: list[int],
    mix_rate: float,
    rng: np.random.Generator,
    shift: bool = True,
    sizes: tuple[int, int, int] | None = None,
) -> RowPlan:
    """Shuffle the pool and decide split and spurious class of every row."""
    order = rng.permutation(len(pool))
    core, label = pool[order], pool_labels[order]
    n_lab, n_unl, n_tgt = sizes or split_sizes(len(core))
    split = np.repeat([LABELED, UNLABELED, TARGET], [n_lab, n_unl, n_tgt])
    conflict = np.zeros(len(core), dtype=bool)
    n_conf_unl = int(round(mix_rate * n_unl))
    unl_idx = np.flatnonzero(split == UNLABELED)
    conflict[rng.choice(unl_idx, size=n_conf_unl, replace=False)] = True
    if shift:
        tgt_idx = np.flatnonzero(split == TARGET)
        conflict[rng.choice(tgt_idx, size=n_tgt // 2, replace=False)] = True
    spurious = label.copy()
    classes_arr = np.asarray(classes)
    for i in np.flatnonzero(conflict):
        others = classes_arr[classes_arr != label[i]]
        spurious[i] = others[rng.integers(len(others))]
    return RowPlan(split=split, core=core, label=label, spurious=spurious, conflict=conflict)


def _pool(source: sources.ImageSource, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    pool = np.flatnonzero(np.isin(source.labels, classes))
    if len(pool) < 10:
        raise SourceNotFoundError(f"{source.name} has only {len(pool)} images of classes {classes}.")
    return pool, source.labels[pool]


def _partners(source: sources.ImageSource, pool: np.ndarray, spurious: np.ndarray, rng) -> np.ndarray:
    """For each row, a random pool image of its spurious class."""
    out = np.empty(len(spurious), dtype=np.int64)
    pool_labels = source.labels[pool]
    for c in np.unique(spurious):
        rows = np.flatnonzero(spurious == c)
        candidates = pool[pool_labels == c]
        out[rows] = candidates[rng.integers(len(candidates), size=len(rows))]
    return out


def _side_by_side(core: np.ndarray, other: np.ndarray, core_right: np.ndarray) -> np.ndarray:
    """(n, H, W) + (n, H, W) -> (n, 1, H, 2W), core on the left unless core_right."""
    left = np.where(core_right[:, None, None], other, core)
    right = np.where(core_right[:, None, None], core, other)
    return np.concatenate([left, right], axis=-1)[:, None]


# ------------------------------------------------------------------ generators


def _toy(spec: ExerciseSpec, rng: np.random.Generator, cfg: SourceConfig) -> tuple[RowPlan, np.ndarray, dict]:
    n = 1500
    pool = np.arange(n)
    x1 = rng.uniform(-1, 1, size=n)
    labels = (x1 < 0).astype(np.int64)
    plan = plan_rows(pool, labels, [0, 1], spec.mix_rate, rng, sizes=(500, 500, 500))
    x1 = x1[plan.core]
    # x2's sign encodes the spurious class: x2 > 0 exactly when spurious == 1.
    mag = rng.uniform(0, 1, size=n)
    x2 = np.where(plan.spurious == 1, mag, -mag)
    X = np.stack([x1, x2], axis=1).astype(np.float32)
    return plan, X, {"name": "uniform", "description": "x1 ~ U[-1,1], y = (x1 < 0)"}


def _mnist_pairs(spec, rng, cfg, *, compose) -> tuple[RowPlan, np.ndarray, dict]:
    src = cfg.mnist()
    pool, pool_labels = _pool(src, spec.digits)
    shift = spec.generator not in ("mysterious", "mysterious_trojan")
    plan = plan_rows(pool, pool_labels, spec.digits, spec.mix_rate, rng, shift=shift)
    X = compose(src, pool, plan, rng).astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, src.summary()


def _compose_cc(src, pool, plan, rng):
    other = src.images[_partners(src, pool, plan.spurious, rng)]
    return _side_by_side(src.images[plan.core], other, np.zeros(len(plan.core), bool))


def _constant_images(src, pool, classes, rng) -> dict[int, np.ndarray]:
    return {c: src.images[rng.choice(pool[src.labels[pool] == c])] for c in classes}


def _compose_constant(random_row: bool):
    def compose(src, pool, plan, rng):
        const = _constant_images(src, pool, np.unique(plan.label), rng)
        other = np.stack([const[c] for c in plan.spurious])
        right = rng.random(len(plan.core)) < 0.5 if random_row else np.zeros(len(plan.core), bool)
        return _side_by_side(src.images[plan.core], other, right)

    return compose


def _compose_uniform(src, pool, plan, rng):
    level = plan.spurious.astype(np.float32) * 0.5 - 2.0
    other = np.broadcast_to(level[:, None, None], (len(level), 28, 28)).astype(np.float32)
    right = rng.random(len(plan.core)) < 0.5
    return _side_by_side(src.images[plan.core], other, right)


def _compose_sum(n_extra: int):
    def compose(src, pool, plan, rng):
        X = src.images[plan.core].copy()
        for _ in range(n_extra):
            X += src.images[_partners(src, pool, plan.spurious, rng)]
        return X[:, None]

    return compose


def _compose_noise_level(src, pool, plan, rng):
    std = (1.0 + plan.spurious.astype(np.float32)) * 0.1
    noise = std[:, None, None] * rng.standard_normal((len(std), 28, 28), dtype=np.float32)
    return (src.images[plan.core] + noise)[:, None]


def _mysterious_trojan(spec, rng, cfg):
    plan, X, info = _mnist_pairs(spec, rng, cfg, compose=_compose_cc)
    rate = float(spec.params.get("trojan_rate", 0.03))
    trojan_label = int(spec.params.get("trojan_label", spec.digits[0]))
    lab = np.flatnonzero(plan.split == LABELED)
    hit = lab[rng.random(len(lab)) < rate]
    H, W = X.shape[-2:]
    for i in hit:
        r, c = rng.integers(0, H - 3), rng.integers(0, W - 3)
        X[i, :, r : r + 3, c : c + 3] += 2.0
    plan.label[hit] = trojan_label
    return plan, X, {**info, "trojan_rows": int(len(hit)), "trojan_rate": rate}


def embed_pairs(X: np.ndarray) -> np.ndarray:
    """Fixed, seeded random convolutional map: (n, 1, 28, 56) -> (n, 198) float32.

    11 random 5x5 filters + ReLU, average-pooled to a 3x6 grid, so each half of the
    pair lands in its own three columns: 11 * 3 * 6 = 198 features.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(EMBED_SEED)
    weight = torch.randn(11, 1, 5, 5, generator=gen) / 5.0
    bias = torch.randn(11, generator=gen) * 0.1
    out = []
    with torch.no_grad():
        for start in range(0, len(X), 2048):
            x = torch.from_numpy(np.ascontiguousarray(X[start : start + 2048]))
            h = F.relu(F.conv2d(x, weight, bias, padding=2))
            out.append(F.adaptive_avg_pool2d(h, (3, 6)).flatten(1).numpy())
    return np.concatenate(out).astype(np.float32)


def _embeddings(spec, rng, cfg):
    plan, X, info = _mnist_pairs(spec, rng, cfg, compose=_compose_cc)
    return plan, embed_pairs(X), {**info, "embedding": f"random conv 11x5x5, relu, avgpool 3x6, seed {EMBED_SEED}"}


def _vehicle_animal(spec, rng, cfg):
    src = cfg.cifar()
    animals = spec.digits  # CIFAR ids of the animals (bird=2, cat=3)
    vehicles = [int(v) for v in spec.params.get("vehicles", [0, 1])]  # airplane, automobile
    pool, pool_labels = _pool(src, animals)
    plan = plan_rows(pool, pool_labels, animals, spec.mix_rate, rng)
    vmap = dict(zip(animals, vehicles, strict=True))
    vehicle_class = np.array([vmap[int(c)] for c in plan.spurious])
    vpool = np.flatnonzero(np.isin(src.labels, vehicles))
    other = src.images[_partners(src, vpool, vehicle_class, rng)]
    right = rng.random(len(plan.core)) < 0.5
    core = src.images[plan.core]
    left = np.where(right[:, None, None, None], other, core)
    rightimg = np.where(right[:, None, None, None], core, other)
    X = np.concatenate([left, rightimg], axis=-1).astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, {**src.summary(), "vehicles": vehicles}


CAPTION_WORDS = ("SUN", "ICE")


def _caption_bands(width: int, words: tuple[str, ...]) -> np.ndarray:
    """One 12-pixel band per class with a word drawn in PIL's built-in bitmap font."""
    from PIL import Image, ImageDraw

    bands = []
    for word in words:
        img = Image.new("L", (width, 12), 0)
        ImageDraw.Draw(img).text((2, 0), word, fill=255)
        bands.append(np.asarray(img, dtype=np.float32) / 255.0 * 3.0 - 1.0)
    return np.stack(bands)


def _humans(spec, rng, cfg):
    src = cfg.faces()
    pool, pool_labels = _pool(src, [0, 1])
    plan = plan_rows(pool, pool_labels, [0, 1], spec.mix_rate, rng)
    images = src.images[plan.core]
    words = tuple(spec.params.get("words", CAPTION_WORDS))
    bands = _caption_bands(images.shape[-1], words)[plan.spurious]
    X = np.concatenate([images, bands], axis=-2)[:, None].astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, {**src.summary(), "caption_words": list(words)}


GENERATOR_FUNCS = {
    "toy": _toy,
    "mnist_cc": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_cc),
    "constant_image": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_constant(False)),
    "constant_image_random_row": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_constant(True)),
    "uniform_color_random_row": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_uniform),
    "sum": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_sum(1)),
    "sum3": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_sum(2)),
    "sum_noise_level": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_noise_level),
    "mysterious": lambda s, r, c: _mnist_pairs(s, r, c, compose=_compose_cc),
    "mysterious_trojan": _mysterious_trojan,
    "embeddings": _embeddings,
    "vehicle_animal": _vehicle_animal,
    "humans": _humans,
}


def generate_exercise(spec: ExerciseSpec, seed: int, cfg: SourceConfig | None = None) -> ExerciseBundle:
    """Build one exercise from its spec and a seed (same seed -> identical arrays)."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    cfg = cfg or SourceConfig()
    rng = exercise_rng(spec, seed)
    plan, X, source_info = GENERATOR_FUNCS[spec.generator](spec, rng, cfg)
    groups = np.where(plan.conflict, CONFLICTING, CORRELATED).astype(np.int8)
    sel = {k: plan.split == k for k in (LABELED, UNLABELED, TARGET)}
    classes = tuple(int(c) for c in (spec.digits if spec.generator != "toy" else [0, 1]))
    meta = {
        "generator": spec.generator,
        "parameters": {
            "digits": list(spec.digits),
            "mix_rate": spec.mix_rate,
            "noise_std": NOISE_STD if spec.generator != "toy" else 0.0,
            **spec.params,
        },
        "seed": int(seed),
        "source": source_info,
        "points": spec.points,
        "default_score": spec.default_score,
        "description": spec.description,
        "package": f"datarena {__version__}",
    }
    bundle = ExerciseBundle(
        exercise_id=spec.id,
        name=spec.name,
        X_labeled=X[sel[LABELED]],
        y_labeled=plan.label[sel[LABELED]].astype(np.int64),
        X_unlabeled=X[sel[UNLABELED]],
        X_target=X[sel[TARGET]],
        y_target=plan.label[sel[TARGET]].astype(np.int64),
        groups_target=groups[sel[TARGET]],
        groups_unlabeled=groups[sel[UNLABELED]],
        classes=classes,
        meta=meta,
    )
    return bundle


def spurious_target(bundle: ExerciseBundle) -> np.ndarray:
    """The class the spurious feature encodes on each target row (for tests and analysis)."""
    classes = np.asarray(bundle.classes)
    flip = bundle.groups_target == CONFLICTING
    if len(classes) == 2:
        other = np.where(bundle.y_target == classes[0], classes[1], classes[0])
        return np.where(flip, other, bundle.y_target)
    raise ValueError("spurious_target is defined for binary exercises only")
