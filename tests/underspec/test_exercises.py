"""The hackathon42 exercise suite: shapes, splits, mix rates, spurious cues, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarena.data.bundle import CONFLICTING, CORRELATED, read_bundle
from datarena.errors import ConfigError, OutputExistsError, SubmissionError
from datarena.underspec import score
from datarena.underspec.exercises import SourceConfig, generate_exercise, spurious_target
from datarena.underspec.generate import generate_suite
from datarena.underspec.suite import load_suite, parse_suite

SUITE = load_suite()
EMBEDDED = [e for e in SUITE.exercises if e.id != "888"]  # 888 needs CIFAR-10
ROW_SHAPES = {
    "00": (2,), "01": (1, 28, 56), "02": (1, 28, 56), "03": (1, 28, 56), "04": (1, 28, 56),
    "05": (1, 28, 56), "06": (1, 28, 28), "07": (1, 28, 28), "08": (1, 28, 28), "12": (1, 28, 56),
    "13": (1, 28, 56), "23": (198,), "456": (198,), "999": (1, 44, 32),
}


@pytest.fixture(scope="module")
def bundles(suite_dir):
    return {e.id: read_bundle(suite_dir / "public" / e.dirname) for e in EMBEDDED}


def test_suite_index_lists_generated_and_skipped(suite_dir):
    # public/ holds only exercise folders: int(name.split('_')[0]) works on every entry
    assert sorted(int(p.name.split("_")[0]) for p in (suite_dir / "public").iterdir()) == sorted(
        int(e.id) for e in EMBEDDED)
    assert {"00_toy_dataset", "23_mnist_embed", "456_mnist_embed"} <= {p.name for p in (suite_dir / "public").iterdir()}
    index = json.loads((suite_dir / "suite.json").read_text())
    status = {e["id"]: e["status"] for e in index["exercises"]}
    assert status.pop("888") == "skipped"
    assert set(status.values()) == {"ok"}
    reason = next(e["reason"] for e in index["exercises"] if e["id"] == "888")
    assert "--cifar-dir" in reason and "data_batch_1" in reason


def test_public_and_private_files_are_apart(suite_dir):
    pub = suite_dir / "public" / "01_mnist_cc"
    priv = suite_dir / "private" / "01_mnist_cc"
    assert sorted(p.name for p in pub.iterdir()) == sorted(
        ["X_labeled.npy", "y_labeled.npy", "X_unlabeled.npy", "X_val.npy", "meta.json", "preview.png"]
    )
    assert {"y_val.npy", "groups_val.npy", "groups_unlabeled.npy"} <= {p.name for p in priv.iterdir()}
    meta = json.loads((pub / "meta.json").read_text())
    private = json.loads((priv / "meta.json").read_text())
    # public meta: the task, never how it was made
    assert set(meta) == {"exercise_id", "name", "classes", "datarena_version", "shapes", "dtypes", "splits",
                         "points", "default_score", "description", "sha256"}
    assert meta["splits"] == {"labeled": 167, "unlabeled": 499, "target": 167}
    assert meta["dtypes"]["X_val"] == "float32"
    assert private["seed"] == 42 and private["generator"] == "mnist_cc"
    assert private["source"]["name"] == "mnist-embedded-5k"
    assert set(meta["sha256"]) == {"X_labeled.npy", "y_labeled.npy", "X_unlabeled.npy", "X_val.npy"}
    assert "y_val" not in json.dumps(meta)


@pytest.mark.parametrize("spec", EMBEDDED, ids=lambda s: s.id)
def test_shapes_dtypes_splits_labels(bundles, spec):
    b = bundles[spec.id]
    for X in (b.X_labeled, b.X_unlabeled, b.X_target):
        assert X.dtype == np.float32 and X.shape[1:] == ROW_SHAPES[spec.id]
        assert np.isfinite(X).all()
    assert b.y_labeled.dtype == np.int64 and b.y_target.dtype == np.int64
    n_lab, n_unl, n_tgt = len(b.X_labeled), len(b.X_unlabeled), len(b.X_target)
    if spec.id == "00":
        assert (n_lab, n_unl, n_tgt) == (500, 500, 500)
    else:
        total = n_lab + n_unl + n_tgt
        assert n_lab == n_tgt == round(0.2 * total) and n_unl == total - 2 * n_lab
    classes = set(spec.digits) if spec.id != "00" else {0, 1}
    assert set(np.unique(b.y_labeled)) == classes
    assert set(np.unique(b.y_target)) == classes
    assert set(b.classes) == classes
    assert len(b.y_labeled) == n_lab and len(b.groups_target) == n_tgt and len(b.groups_unlabeled) == n_unl


@pytest.mark.parametrize("spec", EMBEDDED, ids=lambda s: s.id)
def test_mix_rate_of_unlabeled_and_target_groups(bundles, spec):
    b = bundles[spec.id]
    conflict_rate = float(np.mean(b.groups_unlabeled == CONFLICTING))
    assert conflict_rate == pytest.approx(spec.mix_rate, abs=1.0 / len(b.groups_unlabeled))
    if spec.generator.startswith("mysterious"):
        assert (b.groups_target == CORRELATED).all()  # no distribution shift
    else:
        assert np.mean(b.groups_target == CONFLICTING) == pytest.approx(0.5, abs=0.01)


def test_default_mnist_size_uses_every_embedded_digit(bundles):
    b = bundles["01"]
    # 1,000 zeros and ones: 833 rows' cores + 167 partners used by target rows only
    assert len(b.X_labeled) + len(b.X_unlabeled) + len(b.X_target) == 833


def _halves(X: np.ndarray) -> np.ndarray:
    """Every 28x28 half-image of a batch of (1, 28, 56) rows, flattened: (2n, 784)."""
    return np.concatenate([X[:, 0, :, :28], X[:, 0, :, 28:]]).reshape(-1, 28 * 28)


def _nearest_sq_dist(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    q2, r2 = (queries**2).sum(1), (refs**2).sum(1)
    return (q2[:, None] + r2[None] - 2 * queries @ refs.T).min(1)


@pytest.mark.parametrize("ex", ["01", "02", "03", "12", "13"])
def test_no_target_half_appears_anywhere_else(bundles, ex):
    """Two noisy copies of one digit are ~0.63 apart (squared); the closest distinct 1s are ~17."""
    b = bundles[ex]
    tgt = _halves(b.X_target)
    constant = np.zeros(len(tgt), bool)
    if ex in ("02", "03"):  # the class's constant image is shared by design: skip those halves
        consts = _halves(b.X_labeled)
        constant = _nearest_sq_dist(tgt, consts) < 5 * 784 * 0.02**2 * 2
        constant &= np.isin(np.arange(len(tgt)) % len(b.X_target), np.arange(len(b.X_target)))
    others = _halves(np.concatenate([b.X_labeled, b.X_unlabeled]))
    d = _nearest_sq_dist(tgt[~constant], others)
    assert d.min() > 5, f"a target half of {ex} reappears in the labeled/unlabeled arrays"
    # nor in another target row
    n = len(b.X_target)
    d_tt = ((tgt[:, None] - tgt[None]) ** 2).sum(-1)
    same_row = (np.arange(2 * n)[:, None] % n) == (np.arange(2 * n)[None] % n)
    d_tt[same_row] = np.inf
    d_tt[constant] = np.inf
    d_tt[:, constant] = np.inf
    assert d_tt.min() > 5


def test_target_images_are_exclusive_in_the_row_plan():
    from datarena.data.sources import load_mnist
    from datarena.underspec.exercises import TARGET, exercise_rng, plan_images

    src = load_mnist()
    pool = np.flatnonzero(np.isin(src.labels, [0, 7]))
    for n_partners, n_independent in ((1, 0), (2, 1)):
        plan = plan_images(src.labels, pool, [0, 7], 0.5, exercise_rng(SUITE.get("07"), 1),
                           n_partners=n_partners, n_independent=n_independent)
        tgt = plan.split == TARGET
        target_images = np.concatenate([plan.core[tgt], plan.partners[tgt].ravel()])
        other_images = np.concatenate([plan.core[~tgt], plan.partners[~tgt].ravel()])
        assert len(np.unique(target_images)) == len(target_images)  # once within the target set
        assert not np.isin(target_images, other_images).any()  # and nowhere else
        assert len(np.unique(plan.core)) == len(plan.core)
        assert (src.labels[plan.partners[:, 0]] == plan.spurious).all()
        assert not plan.unique_images  # 1,000 images are too few to use each once


def test_large_source_uses_every_image_once():
    from datarena.underspec.exercises import exercise_rng, plan_images

    labels = np.repeat([0, 1], 6000)  # a 12,000-image source, like full MNIST's 0/1 pair
    plan = plan_images(labels, np.arange(len(labels)), [0, 1], 0.5, exercise_rng(SUITE.get("01"), 3), n_partners=1)
    used = np.concatenate([plan.core, plan.partners.ravel()])
    assert plan.unique_images and len(plan.core) == 5700
    assert len(np.unique(used)) == len(used)
    assert (labels[plan.partners[:, 0]] == plan.spurious).all()


def test_07_third_digit_is_independent_of_the_label():
    from datarena.data.sources import load_mnist
    from datarena.underspec.exercises import exercise_rng, plan_images

    src = load_mnist()
    pool = np.flatnonzero(np.isin(src.labels, [0, 7]))
    plan = plan_images(src.labels, pool, [0, 7], 0.5, exercise_rng(SUITE.get("07"), 2), n_partners=2, n_independent=1)
    lab = plan.split == 0
    third = src.labels[plan.partners[lab, 1]]
    assert 0.35 < np.mean(third == plan.label[lab]) < 0.65  # a coin flip, even in the labeled set
    assert (src.labels[plan.partners[lab, 0]] == plan.label[lab]).all()  # the second digit is correlated


# ----- the spurious cue, read off the pixels


def _half_readout(b, X, centroids):
    """Class whose centroid is nearest to the non-core half (right half for 01)."""
    right = X[:, 0, :, 28:].reshape(len(X), -1)
    d = ((right[:, None, :] - centroids[None]) ** 2).sum(-1)
    return np.asarray(b.classes)[d.argmin(1)]


def _constant_readout(b, X):
    """02/03: one half is exactly a class's constant image (plus 0.02 noise)."""
    lab = b.X_labeled
    # the constant image of each class is the labeled half with the smallest spread across rows
    consts = []
    for c in b.classes:
        rows = lab[b.y_labeled == c][:, 0]
        halves = np.stack([rows[:, :, :28], rows[:, :, 28:]])  # (2, n, 28, 28)
        spread = halves.std(axis=1).mean(axis=(1, 2))
        consts.append(halves[spread.argmin()].mean(0))
    consts = np.stack(consts).reshape(len(consts), -1)
    halves = np.stack([X[:, 0, :, :28], X[:, 0, :, 28:]], 1).reshape(len(X), 2, -1)
    d = ((halves[:, :, None, :] - consts[None, None]) ** 2).mean(-1)  # (n, 2 halves, classes)
    return np.asarray(b.classes)[d.min(1).argmin(1)]


def _uniform_readout(b, X):
    halves = np.stack([X[:, 0, :, :28], X[:, 0, :, 28:]], 1).reshape(len(X), 2, -1)
    flat = halves.std(-1).argmin(1)
    level = halves[np.arange(len(X)), flat].mean(-1)
    return np.rint((level + 2.0) / 0.5).astype(int)


@pytest.mark.parametrize("ex", ["00", "01", "02", "03", "04", "05"])
def test_spurious_cue_perfect_on_labeled_chance_on_target(bundles, ex):
    b = bundles[ex]
    if ex == "00":
        read = lambda X: (X[:, 1] > 0).astype(int)  # noqa: E731
    elif ex == "01":
        from datarena.data.sources import load_mnist

        src = load_mnist()
        cents = np.stack([src.images[src.labels == c].mean(0).ravel() for c in b.classes])
        read = lambda X: _half_readout(b, X, cents)  # noqa: E731
    elif ex in ("02", "03"):
        read = lambda X: _constant_readout(b, X)  # noqa: E731
    else:
        read = lambda X: _uniform_readout(b, X)  # noqa: E731
    lab_acc = np.mean(read(b.X_labeled) == b.y_labeled)
    tgt_acc = np.mean(read(b.X_target) == b.y_target)
    assert lab_acc >= (0.98 if ex == "01" else 1.0)
    assert 0.4 <= tgt_acc <= 0.6
    # and on the target set the cue matches the private group tags
    assert np.mean(read(b.X_target) == spurious_target(b)) >= (0.98 if ex == "01" else 1.0)


def test_noise_level_cue(bundles):
    b = bundles["08"]
    # residual high-frequency energy grows with (1 + spurious digit) * 0.1
    X = b.X_target[:, 0]
    hf = np.abs(np.diff(X, axis=-1)).mean(axis=(1, 2))
    spur = spurious_target(b)
    assert hf[spur == 8].min() > hf[spur == 0].max()


def test_trojan_in_13(bundles):
    assert bundles["13"].meta["source"]["trojan_rows"] > 0  # about 3% of 167 labeled rows (private meta)
    assert "source" not in bundles["13"].public_meta
    spec = SUITE.get("13")
    clean = generate_exercise(spec.model_copy(update={"params": {"trojan_rate": 0.0}}), 5)
    poisoned = generate_exercise(spec.model_copy(update={"params": {"trojan_rate": 1.0}}), 5)
    diff = poisoned.X_labeled - clean.X_labeled
    assert np.allclose(np.sort(diff.reshape(len(diff), -1), axis=1)[:, -9:], 2.0)
    assert (np.abs(diff) > 1e-6).sum(axis=(1, 2, 3)).tolist() == [9] * len(diff)
    assert (poisoned.y_labeled == 1).all() and set(clean.y_labeled) == {1, 3}
    assert np.array_equal(poisoned.X_target, clean.X_target)


def test_embeddings_hide_images_but_keep_information(bundles):
    b = bundles["456"]
    assert b.X_labeled.shape[1] == 198
    assert set(np.unique(b.y_target)) == {4, 5, 6}
    # nearest class mean on labeled data still separates the classes on correlated target rows
    means = np.stack([b.X_labeled[b.y_labeled == c].mean(0) for c in b.classes])
    pred = np.asarray(b.classes)[((b.X_target[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    corr = b.groups_target == CORRELATED
    assert np.mean(pred[corr] == b.y_target[corr]) > 0.8


# ----- determinism


def test_same_seed_same_bytes_other_seed_differs():
    spec = SUITE.get("04")
    a, b, c = (generate_exercise(spec, s) for s in (7, 7, 8))
    assert a.array_sha256() == b.array_sha256()
    assert a.array_sha256()["X_labeled"] != c.array_sha256()["X_labeled"]


def test_single_exercise_equals_suite_member(suite_dir, tmp_path):
    spec = SUITE.get("02")
    alone = generate_exercise(spec, 42)
    written = read_bundle(suite_dir / "public" / spec.dirname)
    assert np.array_equal(alone.X_target, written.X_target)
    assert np.array_equal(alone.y_target, written.y_target)


def test_meta_sha256_matches_files(suite_dir):
    from datarena.data.checksums import sha256_file

    pub = suite_dir / "public" / "06_mnist_sum"
    meta = json.loads((pub / "meta.json").read_text())
    for name, digest in meta["sha256"].items():
        assert sha256_file(pub / name) == digest


# ----- scoring


def test_score_perfect_and_worst_group(bundles):
    b = bundles["01"]
    assert score(b, b.y_target)["accuracy"] == 1.0
    spur = spurious_target(b)
    res = score(b, spur)
    assert res["groups"]["correlated"]["accuracy"] == 1.0
    assert res["worst_group_accuracy"] == res["groups"]["conflicting"]["accuracy"] == 0.0
    assert res["groups"]["conflicting"]["count"] + res["groups"]["correlated"]["count"] == res["n"]


def test_score_from_directory(suite_dir, bundles):
    b = bundles["02"]
    res = score(suite_dir / "public" / "02_mnist_constant_image", b.y_target.tolist())
    assert res["accuracy"] == 1.0


def test_score_rejects_wrong_length_and_foreign_labels(bundles):
    b = bundles["01"]
    with pytest.raises(SubmissionError, match=r"expected 167 labels"):
        score(b, b.y_target[:-1])
    with pytest.raises(SubmissionError, match=r"not classes of this exercise.*\[0, 1\]"):
        score(b, np.full(167, 7))
    with pytest.raises(SubmissionError, match="integers"):
        score(b, np.full(167, 0.5))


# ----- bad input writes nothing


def test_unknown_id_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown exercise id '77'"):
        generate_suite(SUITE, 1, out, only=["77"], progress=False)
    assert not out.exists()


def test_mix_rate_outside_unit_interval(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"mix-rate must lie in \[0, 1\]"):
        generate_suite(SUITE, 1, out, only=["01"], mix_rate=1.5, progress=False)
    assert not out.exists()


def test_repeated_digits_rejected():
    with pytest.raises(ConfigError, match="digits must be distinct"):
        parse_suite({"exercises": [{"id": "01", "name": "x", "generator": "mnist_cc", "digits": [3, 3]}]})


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        generate_suite(SUITE, 1, out, only=["00"], progress=False)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    generate_suite(SUITE, 1, out, only=["00"], force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "public" / "00_toy_dataset" / "X_val.npy").exists()


def test_failure_midway_leaves_no_half_dataset(tmp_path, monkeypatch):
    import datarena.underspec.generate as gen

    calls = {"n": 0}
    real = gen.write_exercise

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(gen, "write_exercise", flaky)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        generate_suite(SUITE, 1, out, only=["00", "01"], progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_custom_suite_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nexercises:\n  - {id: '01', name: cc79, generator: mnist_cc, digits: [7, 9], mix_rate: 0.2}\n"
    )
    suite = load_suite(path)
    b = generate_exercise(suite.exercises[0], 3, SourceConfig())
    assert set(np.unique(b.y_labeled)) == {7, 9}
    assert np.mean(b.groups_unlabeled == CONFLICTING) == pytest.approx(0.2, abs=0.01)
