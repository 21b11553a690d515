"""Scene grammar, batched renderer, writers, and a short Meta-Sim run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datarena.errors import ConfigError
from datarena.scenes.grammar import (
    ATTRS,
    load_grammar,
    parse_grammar,
    shipped_grammars,
    texture_bank,
)
from datarena.scenes.render import render

BASE = {"name": "t", "canvas": 32, "object": {"x": 16, "y": 16}}


def grammar_with(**over):
    data = json.loads(json.dumps(BASE))
    for key, value in over.items():
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return parse_grammar(data, "test grammar")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("object.rotation", {"kind": "uniform", "low": 5, "high": 1}, "low <= high"),
        ("object.rotation", {"kind": "normal", "mean": 0}, "needs std"),
        ("object.scale", {"kind": "mixture", "components": []}, "at least one entry"),
        ("object.classes", [3, 12], "digits 0-9"),
        ("objects", {"min": 3, "max": 2}, "exceeds objects.max"),
        ("canvas", 4, "canvas"),
        ("object.split", "nope", "object.split"),
    ],
)
def test_grammar_validation_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        grammar_with(**{key: value})


def test_unknown_grammar_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no grammar named 'nope'; shipped: aerial, aerial_target, bigmnist"):
        load_grammar("nope")
    bad = tmp_path / "g.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_grammar(bad)


def test_shipped_grammars_load():
    names = shipped_grammars()
    for name in ("mnist", "mnist_rot90", "bigmnist", "bigmnist_rot270_shift", "digit_scenes", "digit_scenes_target"):
        assert name in names
        load_grammar(name)
    assert load_grammar("bigmnist_rot270_shift").object.x.value == 16


def test_sampling_is_seeded_and_shardable():
    g = load_grammar("digit_scenes")
    a, b = g.sample(600, seed=3), g.sample(600, seed=3)
    assert torch.equal(a.attrs, b.attrs) and torch.equal(a.texture, b.texture)
    assert not torch.equal(a.attrs, g.sample(600, seed=4).attrs)
    shard = g.sample(100, seed=3, start=250)  # crosses a chunk boundary
    assert torch.equal(shard.attrs, a.attrs[250:350]) and torch.equal(shard.classes, a.classes[250:350])
    counts = a.present.sum(1)
    assert counts.min() >= 1 and counts.max() <= 3 and len(set(counts.tolist())) == 3
    bank = texture_bank("train")
    present = a.present
    assert torch.equal(torch.from_numpy(bank.labels)[a.texture[present]], a.classes[present])


def test_mixture_and_distribution_moments():
    g = grammar_with(**{"object.rotation": {"kind": "mixture", "components": [-30, {"kind": "normal", "mean": 30, "std": 1}], "weights": [1, 3]}})
    rot = g.sample(4000, 0).attr("rotation")[:, 0]
    assert abs((rot < 0).float().mean() - 0.25) < 0.03
    assert abs(g.object.rotation.mean_value() - 15.0) < 1e-9


def _single(g, rotation=0.0, x=16.0, y=16.0):
    batch = g.sample(1, seed=0)
    attrs = batch.attrs.clone()
    attrs[0, 0, ATTRS.index("rotation")] = rotation
    attrs[0, 0, ATTRS.index("x")] = x
    attrs[0, 0, ATTRS.index("y")] = y
    return batch.with_attrs(attrs)


def test_rotation_matches_pil_and_translation_moves_pixels():
    g = load_grammar("mnist")
    batch = _single(g, rotation=90.0)
    digit = texture_bank("train").textures[batch.texture[0, 0]].numpy()
    canvas = np.zeros((32, 32), np.float32)
    canvas[2:30, 2:30] = digit
    pil = np.asarray(Image.fromarray(canvas).rotate(90, resample=Image.BILINEAR))  # counter-clockwise
    ours = render(batch, g).images[0, 0].numpy()
    np.testing.assert_allclose(ours, pil, atol=1e-4)
    still = render(_single(g), g).images[0, 0].numpy()
    np.testing.assert_allclose(still, canvas, atol=1e-5)
    moved = render(_single(g, x=19.0, y=14.0), g).images[0, 0].numpy()
    np.testing.assert_allclose(moved[:-2, 3:], canvas[2:, :-3], atol=1e-5)  # 3 right, 2 up


def test_masks_and_boxes_match_the_image():
    g = load_grammar("digit_scenes")
    r = render(g.sample(64, seed=1), g)
    # black background, white digits: the image equals the digit coverage
    assert torch.equal(r.masks > 0, r.images[:, 0] >= 0.5)
    single = [i for i in range(64) if int((r.classes[i] >= 0).sum()) == 1]
    for i in single:
        ys, xs = np.nonzero(r.masks[i].numpy())
        assert r.boxes[i, 0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert set(np.unique(r.masks[i].numpy())) == {0, int(r.classes[i, 0]) + 1}
    assert (r.boxes[r.classes < 0] == -1).all()


def test_a_few_scenes_render_eagerly_with_the_compiled_kernels_pixels(monkeypatch):
    """Under EAGER_BELOW scenes without gradients, a fresh process renders eagerly (no compile of
    seconds for `scenes render --n 3`), and the pixels are the compiled kernel's, bit for bit."""
    import datarena.scenes.render as R

    g = load_grammar("digit_scenes")
    compiled = render(g.sample(R.EAGER_BELOW + 6, seed=5), g)  # a batch that large: the compiled kernel
    monkeypatch.setattr(R, "_compiled", None)  # as in a process that has compiled nothing yet
    asked = []
    monkeypatch.setattr(R, "_core", lambda: asked.append(1) or R._render_core)
    eager = render(g.sample(8, seed=5), g)
    assert not asked  # the compiler was not asked for
    assert torch.equal(eager.images, compiled.images[:8]) and torch.equal(eager.masks, compiled.masks[:8])
    render(g.sample(R.EAGER_BELOW, seed=5), g)
    assert asked  # from EAGER_BELOW scenes on it is


def test_ignore_band_and_background_noise():
    g = load_grammar("digit_scenes_target")
    r = render(g.sample(16, seed=2), g)
    values = set(np.unique(r.masks.numpy()).tolist())
    assert 255 in values and 0 in values and values <= set(range(11)) | {255}
    again = render(g.sample(16, seed=2), g)
    assert torch.equal(r.images, again.images)  # noise is seeded per scene


def test_gradients_reach_every_continuous_attribute():
    g = load_grammar("digit_scenes")
    batch = g.sample(8, seed=5)
    attrs = batch.attrs.clone().requires_grad_(True)
    images = render(batch.with_attrs(attrs), g).images
    weights = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    (images * weights).sum().backward()
    present = batch.present
    for i, name in enumerate(ATTRS):
        assert attrs.grad[..., i][present].abs().sum() > 0, name
    assert torch.isfinite(attrs.grad).all()


def test_scenes_render_writes_valid_datasets(tmp_path):
    from datarena.data.segmentation import DatasetRules, VOCDataset, validate_dataset
    from datarena.scenes.writers import write_scenes

    g = load_grammar("digit_scenes")
    voc = write_scenes(g, 40, 7, tmp_path / "voc", show_progress=False)
    assert validate_dataset(voc, DatasetRules(size=(64, 64), num_classes=11)).ok
    assert len(VOCDataset(voc)) == 40 and (voc / "preview.png").is_file()
    npy = write_scenes(g, 40, 7, tmp_path / "npy", fmt="npy", show_progress=False)
    x, masks = np.load(npy / "X.npy"), np.load(npy / "masks.npy")
    assert x.shape == (40, 64, 64) and masks.shape == (40, 64, 64)
    np.testing.assert_array_equal(masks, np.stack([VOCDataset(voc)[i][1] for i in range(40)]))
    meta = json.loads((npy / "meta.json").read_text())
    assert meta["seed"] == 7 and set(meta["files"]) == {"X.npy", "y.npy", "masks.npy", "classes.npy", "boxes.npy"}


# ---------------------------------------------------------------- Meta-Sim

SMALL = dict(epochs=8, mmd_batch=64, target_images=200, task_images=64, task_steps=5, pretrain_steps=60, restarts=1,
             pairs=1, lr=0.02, mmd_warmup=0.0)


def test_reinforce_term_has_a_real_gradient(tmp_path):
    """The score-function term alone moves the generator toward higher reward (not a zero gradient)."""
    from datarena.metasim.train import MetaSimConfig, train_metasim

    def reward(scenes, data, seed):  # highest when digits are turned by 40 degrees
        rot = scenes.attr("rotation")[scenes.present].mean()
        return float(-abs(rot - 40.0) / 40.0)

    cfg = MetaSimConfig(loss="task", **{**SMALL, "epochs": 12, "explore_std": 0.1})
    result = train_metasim("mnist", "mnist_rot90", tmp_path / "task", cfg, evaluate=False, show_progress=False, reward_fn=reward)
    rotations = [h["attributes"]["rotation"] for h in result.history]
    assert rotations[-1] > rotations[0] + 10, rotations
    assert result.report["reward"] == "custom reward_fn"


def test_short_metasim_run_moves_rotation_toward_the_target(tmp_path):
    from datarena.metasim.io import load_generator
    from datarena.metasim.train import MetaSimConfig, train_metasim
    from datarena.scenes.grammar import parse_grammar

    target = parse_grammar({"name": "rot30", "canvas": 32, "object": {"split": "heldout", "x": 16, "y": 16, "rotation": 30}})
    result = train_metasim("mnist", target, tmp_path / "run", MetaSimConfig(loss="mmd", **SMALL), evaluate=False, show_progress=False)
    last = result.history[-1]["attributes"]["rotation"]
    assert abs(result.report["pretrain_identity_mse"]) < 1e-2  # starts at the prior (mean rotation 0)
    assert abs(last - 30) < 8, [h["attributes"]["rotation"] for h in result.history]
    assert result.history[-1]["mmd"] < result.history[0]["mmd"]
    for name in ("generator.pt", "curves.png", "samples_prior.png", "samples_learned.png", "samples_target.png", "report.json"):
        assert (tmp_path / "run" / name).is_file(), name
    gen, prior = load_generator(tmp_path / "run" / "generator.pt")
    batch = prior.sample(32, 0)
    with torch.no_grad():
        moved = gen(batch).attr("rotation")[:, 0].mean()
    assert abs(float(moved) - last) < 5


@pytest.mark.parametrize("name", ["digit_scenes", "mnist", "aerial"])
def test_one_scene_interface_loads_samples_and_renders_every_kind(name):
    """scenes.api: the same four calls for a digit grammar and a scene graph; boxes -1 where absent."""
    from datarena.scenes import api

    g = api.load(name)
    batch = api.sample(g, 6, seed=3)
    out = api.render(g, batch)
    assert out.images.shape[0] == 6 and out.images.shape[-1] == g.canvas and out.masks.shape == (6, g.canvas, g.canvas)
    assert 0.0 <= float(out.images.min()) and float(out.images.max()) <= 1.0
    assert int(out.masks.max()) < len(api.classes(g))
    again = api.render(g, api.sample(g, 6, seed=3))
    assert torch.equal(out.images, again.images)  # scene i depends on (seed, i) alone
    tail = api.render(g, api.sample(g, 2, seed=3, start=4))
    assert torch.equal(out.masks[4:], tail.masks)
    assert bool((out.boxes[~batch.present] == -1).all())  # absent objects: -1 in every kind
    assert name != "aerial" or bool((~batch.present).any())  # the scene graphs do have absent nodes here
