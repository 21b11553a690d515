"""Generators of the hackathon42 exercises: real digits + a seed -> ExerciseBundle.

Every exercise is built the same way. A pool of source images of the exercise's
classes is shuffled; each row has a *core* image (its class is the label) and,
depending on the exercise, partner images. Rows are split 20% labeled / 60%
unlabeled / 20% target. Each row also gets a *spurious* class: equal to the
label on correlated rows, another class on conflicting rows. Labeled rows are
all correlated; a fraction `mix_rate` of the unlabeled rows conflicts; the
target set is random pairs, exactly half conflicting, so the spurious cue is at
chance there. The generator then draws the spurious feature (second digit,
constant image, uniform colour, noise level, vehicle, caption word) from the
spurious class.

Images of target rows are used once (`plan_images`): no target core or partner
appears anywhere else in the exercise, so looking a target half up in the
public arrays finds nothing. When the source is large enough every image is
used once per exercise, as in the original challenge.
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
# Use every image once when that still leaves this many rows (full MNIST: ~7,000 per pair);
# smaller sources (the embedded 5,000 digits) let labeled/unlabeled rows share partners.
UNIQUE_MIN_ROWS = 2000


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
    """Per-row split, label, spurious class and source images, shared by every generator."""

    split: np.ndarray  # (n,) LABELED / UNLABELED / TARGET
    core: np.ndarray  # (n,) index into the source
    label: np.ndarray  # (n,) class of the core image
    spurious: np.ndarray  # (n,) class the spurious feature encodes
    conflict: np.ndarray  # (n,) bool
    partners: np.ndarray | None = None  # (n, k) source indices of partner images
    unique_images: bool = False  # every image of the exercise is used once


def exercise_rng(spec: ExerciseSpec, seed: int) -> np.random.Generator:
    """Per-exercise stream: a suite and a single `generate exercise` give the same arrays."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), spec.seed_key]))


def split_sizes(n: int) -> tuple[int, int, int]:
    n_lab = int(round(0.2 * n))
    n_tgt = int(round(0.2 * n))
    return n_lab, n - n_lab - n_tgt, n_tgt


def _assign_conflicts(split: np.ndarray, label: np.ndarray, classes: list[int], mix_rate: float,
                      rng: np.random.Generator, shift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Conflicting rows (mix_rate of unlabeled, half the target when shift) and their spurious class."""
    conflict = np.zeros(len(label), dtype=bool)
    unl_idx = np.flatnonzero(split == UNLABELED)
    conflict[rng.choice(unl_idx, size=int(round(mix_rate * len(unl_idx))), replace=False)] = True
    if shift:
        tgt_idx = np.flatnonzero(split == TARGET)
        conflict[rng.choice(tgt_idx, size=len(tgt_idx) // 2, replace=False)] = True
    spurious = label.copy()
    classes_arr = np.asarray(classes)
    for i in np.flatnonzero(conflict):
        others = classes_arr[classes_arr != label[i]]
        spurious[i] = others[rng.integers(len(others))]
    return conflict, spurious


def plan_rows(
    pool: np.ndarray,
    pool_labels: np.ndarray,
    classes: list[int],
    mix_rate: float,
    rng: np.random.Generator,
    shift: bool = True,
    sizes: tuple[int, int, int] | None = None,
) -> RowPlan:
    """Shuffle the pool and decide split and spurious class of every row (no partner images)."""
    order = rng.permutation(len(pool))
    core, label = pool[order], pool_labels[order]
    n_lab, n_unl, n_tgt = sizes or split_sizes(len(core))
    split = np.repeat([LABELED, UNLABELED, TARGET], [n_lab, n_unl, n_tgt])
    conflict, spurious = _assign_conflicts(split, label, classes, mix_rate, rng, shift)
    return RowPlan(split=split, core=core, label=label, spurious=spurious, conflict=conflict)


def _partner_classes(spurious: np.ndarray, classes: list[int], n_partners: int, n_independent: int,
                     class_map: dict[int, int] | None, rng: np.random.Generator) -> np.ndarray:
    """(n, n_partners) class of each partner: the spurious class, then independent random classes."""
    cols = [spurious] * (n_partners - n_independent)
    cols += [np.asarray(classes)[rng.integers(len(classes), size=len(spurious))] for _ in range(n_independent)]
    out = np.stack(cols, axis=1) if cols else np.zeros((len(spurious), 0), dtype=np.int64)
    if class_map:
        out = np.vectorize(lambda c: class_map[int(c)], otypes=[np.int64])(out) if out.size else out
    return out.astype(np.int64)


def _take(candidates: dict[int, list[int]], wanted: np.ndarray, what: str) -> np.ndarray:
    """Pop one image of each wanted class from per-class queues (without replacement)."""
    out = np.empty(wanted.shape, dtype=np.int64)
    for idx in np.ndindex(wanted.shape):
        queue = candidates.get(int(wanted[idx]), [])
        if not queue:
            raise SourceNotFoundError(
                f"too few images of class {int(wanted[idx])} for {what}; use a larger source (e.g. --mnist-dir)."
            )
        out[idx] = queue.pop()
    return out


def _queues(images: np.ndarray, labels_of: np.ndarray) -> dict[int, list[int]]:
    """Per-class stacks in the given (shuffled) order; pop() takes the first."""
    return {int(c): images[labels_of[images] == c][::-1].tolist() for c in np.unique(labels_of[images])}


def plan_images(
    source_labels: np.ndarray,
    pool: np.ndarray,
    classes: list[int],
    mix_rate: float,
    rng: np.random.Generator,
    *,
    shift: bool = True,
    n_partners: int = 0,
    n_independent: int = 0,
    partner_pool: np.ndarray | None = None,
    class_map: dict[int, int] | None = None,
) -> RowPlan:
    """Rows with core and partner images such that no image of a target row is used anywhere else.

    Partners come from `pool` itself or from a separate `partner_pool` (888's vehicles, whose
    classes are `class_map[spurious]`). The first `n_partners - n_independent` partners show the
    spurious class, the rest a class drawn independently of the label (07's third digit).
    """
    same_pool = partner_pool is None
    order = rng.permutation(pool)
    P = len(order)
    if same_pool:
        k = 1 + n_partners
        # 5% fewer rows than images allow, so that no class runs short of partners by chance
        unique = int(0.95 * P / k) >= UNIQUE_MIN_ROWS
        n_tgt = round(0.2 * int(0.95 * P / k)) if unique else round(P / (5 + n_partners))
        n = int(0.95 * P / k) if unique else P - n_partners * n_tgt
    else:
        n = P
        n_tgt = round(0.2 * n)
        unique = len(partner_pool) >= n * n_partners
    n_lab, n_unl = n_tgt, n - 2 * n_tgt
    if min(n_lab, n_unl, n_tgt) < 1:
        raise SourceNotFoundError(f"{P} images of classes {classes} are too few for an exercise.")

    # Target rows first: their cores and partners are taken out of every other use.
    tgt_core = order[:n_tgt]
    rest = order[n_tgt:]
    tgt_label = source_labels[tgt_core]
    tgt_split = np.full(n_tgt, TARGET)
    tgt_conflict, tgt_spurious = _assign_conflicts(tgt_split, tgt_label, classes, mix_rate, rng, shift)
    tgt_pclass = _partner_classes(tgt_spurious, classes, n_partners, n_independent, class_map, rng)
    partner_source = rest if same_pool else rng.permutation(partner_pool)
    queues = _queues(partner_source, source_labels)
    tgt_partners = _take(queues, tgt_pclass, "the target rows' partner images")
    used = set(tgt_partners.ravel().tolist())
    if same_pool:
        rest = np.array([i for i in rest if i not in used], dtype=np.int64)
        free_partners = rest  # what non-target rows may pair with
    else:
        free_partners = np.array([i for i in partner_source if i not in used], dtype=np.int64)

    # Labeled and unlabeled rows from what is left.
    other_core = rest[: n - n_tgt]
    other_label = source_labels[other_core]
    other_split = np.repeat([LABELED, UNLABELED], [n_lab, n_unl])
    other_conflict, other_spurious = _assign_conflicts(other_split, other_label, classes, mix_rate, rng, shift)
    other_pclass = _partner_classes(other_spurious, classes, n_partners, n_independent, class_map, rng)
    other_partners = np.empty(other_pclass.shape, dtype=np.int64)
    if unique:
        spare = rest[n - n_tgt:] if same_pool else free_partners
        queues = _queues(spare, source_labels)
    by_class = {int(c): free_partners[source_labels[free_partners] == c] for c in np.unique(other_pclass)}
    for idx in np.ndindex(other_pclass.shape):
        c = int(other_pclass[idx])
        if unique and queues.get(c):
            other_partners[idx] = queues[c].pop()
            continue
        # Small source (or a class ran short): share partners among labeled/unlabeled rows only.
        cands = by_class[c]
        if len(cands) == 0:
            raise SourceNotFoundError(f"no image of class {c} is left for partner images; use a larger source.")
        j = int(rng.integers(len(cands)))
        if same_pool and cands[j] == other_core[idx[0]] and len(cands) > 1:
            j = (j + 1) % len(cands)  # never pair an image with itself
        other_partners[idx] = cands[j]

    return RowPlan(
        split=np.concatenate([other_split, tgt_split]),
        core=np.concatenate([other_core, tgt_core]),
        label=np.concatenate([other_label, tgt_label]),
        spurious=np.concatenate([other_spurious, tgt_spurious]),
        conflict=np.concatenate([other_conflict, tgt_conflict]),
        partners=np.concatenate([other_partners, tgt_partners]),
        unique_images=unique,
    )


def _pool(source: sources.ImageSource, classes: list[int]) -> np.ndarray:
    pool = np.flatnonzero(np.isin(source.labels, classes))
    if len(pool) < 10:
        raise SourceNotFoundError(f"{source.name} has only {len(pool)} images of classes {classes}.")
    return pool


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
    return plan, X, {"name": "uniform", "rule": "x1 ~ U[-1,1], y = (x1 < 0); sign(x2) = spurious class"}


def _mnist_rows(spec, rng, cfg, *, compose, n_partners: int = 0, n_independent: int = 0,
                n_reserved: int = 0) -> tuple[RowPlan, np.ndarray, dict]:
    """MNIST exercises: plan rows (target images used once), compose pixels, add noise."""
    src = cfg.mnist()
    pool = _pool(src, spec.digits)
    reserved = {}
    if n_reserved:  # 02/03: one constant image per class, never a core or partner
        for c in spec.digits:
            reserved[c] = int(rng.choice(pool[src.labels[pool] == c]))
        pool = pool[~np.isin(pool, list(reserved.values()))]
    shift = spec.generator not in ("mysterious", "mysterious_trojan")
    plan = plan_images(src.labels, pool, spec.digits, spec.mix_rate, rng, shift=shift,
                       n_partners=n_partners, n_independent=n_independent)
    X = compose(src, plan, reserved, rng).astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, {**src.summary(), "unique_images": plan.unique_images}


def _compose_cc(src, plan, reserved, rng):
    return _side_by_side(src.images[plan.core], src.images[plan.partners[:, 0]], np.zeros(len(plan.core), bool))


def _compose_constant(random_row: bool):
    def compose(src, plan, reserved, rng):
        other = np.stack([src.images[reserved[int(c)]] for c in plan.spurious])
        right = rng.random(len(plan.core)) < 0.5 if random_row else np.zeros(len(plan.core), bool)
        return _side_by_side(src.images[plan.core], other, right)

    return compose


def _compose_uniform(src, plan, reserved, rng):
    level = plan.spurious.astype(np.float32) * 0.5 - 2.0
    other = np.broadcast_to(level[:, None, None], (len(level), 28, 28)).astype(np.float32)
    right = rng.random(len(plan.core)) < 0.5
    return _side_by_side(src.images[plan.core], other, right)


def _compose_sum(src, plan, reserved, rng):
    X = src.images[plan.core].copy()
    for j in range(plan.partners.shape[1]):
        X += src.images[plan.partners[:, j]]
    return X[:, None]


def _compose_noise_level(src, plan, reserved, rng):
    std = (1.0 + plan.spurious.astype(np.float32)) * 0.1
    noise = std[:, None, None] * rng.standard_normal((len(std), 28, 28), dtype=np.float32)
    return (src.images[plan.core] + noise)[:, None]


def _mysterious_trojan(spec, rng, cfg):
    plan, X, info = _mnist_rows(spec, rng, cfg, compose=_compose_cc, n_partners=1)
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
    plan, X, info = _mnist_rows(spec, rng, cfg, compose=_compose_cc, n_partners=1)
    return plan, embed_pairs(X), {**info, "embedding": f"random conv 11x5x5, relu, avgpool 3x6, seed {EMBED_SEED}"}


def _vehicle_animal(spec, rng, cfg):
    src = cfg.cifar()
    animals = spec.digits  # CIFAR ids of the animals (bird=2, cat=3)
    vehicles = [int(v) for v in spec.params.get("vehicles", [0, 1])]  # airplane, automobile
    pool = _pool(src, animals)
    vpool = np.flatnonzero(np.isin(src.labels, vehicles))
    vmap = dict(zip(animals, vehicles, strict=True))
    plan = plan_images(src.labels, pool, animals, spec.mix_rate, rng, n_partners=1,
                       partner_pool=vpool, class_map=vmap)
    other = src.images[plan.partners[:, 0]]
    right = rng.random(len(plan.core)) < 0.5
    core = src.images[plan.core]
    left = np.where(right[:, None, None, None], other, core)
    rightimg = np.where(right[:, None, None, None], core, other)
    X = np.concatenate([left, rightimg], axis=-1).astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, {**src.summary(), "vehicles": vehicles, "unique_images": plan.unique_images}


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
    pool = _pool(src, [0, 1])
    plan = plan_images(src.labels, pool, [0, 1], spec.mix_rate, rng)
    images = src.images[plan.core]
    words = tuple(spec.params.get("words", CAPTION_WORDS))
    bands = _caption_bands(images.shape[-1], words)[plan.spurious]
    X = np.concatenate([images, bands], axis=-2)[:, None].astype(np.float32)
    X += NOISE_STD * rng.standard_normal(X.shape, dtype=np.float32)
    return plan, X, {**src.summary(), "caption_words": list(words), "unique_images": plan.unique_images}


GENERATOR_FUNCS = {
    "toy": _toy,
    "mnist_cc": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_cc, n_partners=1),
    "constant_image": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_constant(False), n_reserved=2),
    "constant_image_random_row": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_constant(True), n_reserved=2),
    "uniform_color_random_row": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_uniform),
    "sum": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_sum, n_partners=1),
    # 07 as the original notebook: three digits, the third of a class drawn independently of the label.
    "sum3": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_sum, n_partners=2, n_independent=1),
    "sum_noise_level": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_noise_level),
    "mysterious": lambda s, r, c: _mnist_rows(s, r, c, compose=_compose_cc, n_partners=1),
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
    # Public: what a participant needs to do the task. Everything that describes how the
    # answer was made (generator, its parameters, the seed, the source) stays private.
    public_meta = {
        "points": spec.points,
        "default_score": spec.default_score,
        "description": spec.description,
    }
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
        "notes": spec.notes,
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
        public_meta=public_meta,
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
