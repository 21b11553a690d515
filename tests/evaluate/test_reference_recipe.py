"""Scoring faithful to torchvision's reference recipe and to the two deadlines (issue 20)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from datarena.data.segmentation import (
    DatasetRules,
    SegmentationSet,
    load_segmentation,
    make_voc_dirs,
    validate_dataset,
    validate_npz,
    write_npz,
    write_pair,
)
from datarena.errors import ConfigError
from datarena.evaluate import imagenet
from datarena.evaluate.checksum import checkpoint_sha256, state_dict_sha256
from datarena.evaluate.deeplab import deeplabv3
from datarena.evaluate.train import (
    budget_from,
    evaluate_segmentation,
    load_model,
    resize_for_eval,
    score_dataset,
    score_model,
    train_dataset,
    train_segmentation,
)

TINY = dict(iterations=3, batch_size=2, crop_size=32, pretrained="none", class_weights="uniform", checkpoint_every=1)


def tiny_set(n: int = 6, size: int = 40, seed: int = 0) -> SegmentationSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, 10:30, 10:30] = rng.integers(1, 11, n)[:, None, None]
    return SegmentationSet(images, masks, tuple(str(c) for c in range(11)))


# ---------------------------------------------------------------- ImageNet weights, found and verified


@pytest.fixture
def fake_published(tmp_path, monkeypatch):
    """A torchvision-layout resnet18 file, published under the name its own sha256 gives."""
    net = deeplabv3(11, "resnet18")
    state = dict(net.backbone.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    src = tmp_path / "file.pth"
    torch.save(state, src)
    from datarena.data.checksums import sha256_file

    name = f"resnet18-{sha256_file(src)[:8]}.pth"
    monkeypatch.setitem(imagenet.PUBLISHED, "resnet18", (name,))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return src, name, state


def test_imagenet_weights_from_the_hub_cache_or_a_file(fake_published, tmp_path):
    src, name, state = fake_published
    with pytest.raises(ConfigError) as err:  # missing: says where, which name and hash, and the way out
        imagenet.find_imagenet_weights("resnet18")
    msg = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg and name in msg and "--pretrained none" in msg
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / name).write_bytes(src.read_bytes())
    found = imagenet.find_imagenet_weights("resnet18")
    assert found.path == cache / name and found.name == name
    assert imagenet.find_imagenet_weights("resnet18", src).name == name  # an explicit file, same bytes
    bad = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in state.items()}, bad)
    with pytest.raises(ConfigError, match="matches none of torchvision's published"):
        imagenet.find_imagenet_weights("resnet18", bad)
    (cache / name).write_bytes(bad.read_bytes())  # a damaged cache file
    with pytest.raises(ConfigError, match="is damaged"):
        imagenet.find_imagenet_weights("resnet18")
    (cache / name).write_bytes(src.read_bytes())
    # a run records which weights it started from; --pretrained none is accepted and recorded as none
    b = budget_from("syntagen", backbone="resnet18", num_classes=11, base_size=None, eval_size=None, **{
        k: v for k, v in TINY.items() if k != "pretrained"})
    assert b.pretrained == "imagenet"
    run = train_segmentation(tiny_set(), b, show_progress=False)
    assert run.backbone_weights == str(cache / name) and run.backbone_sha256 == found.sha256
    loaded = deeplabv3(11, "resnet18", backbone_weights=cache / name)
    assert torch.equal(loaded.backbone.state_dict()["conv1.weight"], state["conv1.weight"])
    scratch = train_segmentation(tiny_set(), b.model_copy(update={"pretrained": "none"}), show_progress=False)
    assert scratch.backbone_weights is None and scratch.backbone_sha256 is None


def test_syntagen_refuses_to_start_without_imagenet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    b = budget_from("syntagen", num_classes=11, **{k: v for k, v in TINY.items() if k != "pretrained"})
    with pytest.raises(ConfigError, match="resnet50-0676ba61.pth"):
        train_segmentation(tiny_set(), b, show_progress=False)


# ---------------------------------------------------------------- the reference's recipe


def test_eval_resizes_the_shorter_side_to_520_mask_nearest():
    image = np.zeros((400, 600, 3), np.uint8)
    mask = np.zeros((400, 600), np.uint8)
    mask[:, 300:] = 7
    mask[0, 0] = 255
    img2, m2 = resize_for_eval(image, mask, 520)
    assert img2.shape == (520, 780, 3) and m2.shape == (520, 780)
    assert set(np.unique(m2)) == {0, 7, 255}  # nearest: no blended class ids
    assert (m2[:, 400:] == 7).all() and (m2[:, :380] != 7).all()
    tall_img, tall = resize_for_eval(image.transpose(1, 0, 2), mask.T, 520)
    assert tall.shape == (780, 520)
    # the confusion matrix counts the resized pixels
    ds = SegmentationSet(image[None], mask[None], tuple(str(c) for c in range(21)))
    net = deeplabv3(21, "resnet18")
    from datarena.evaluate import train as train_mod

    seen = []
    real = train_mod.confusion_matrix
    train_mod.confusion_matrix = lambda pred, target, c: seen.append(target.shape) or real(pred, target, c)
    try:
        evaluate_segmentation(net, ds, 21, eval_size=520)
        evaluate_segmentation(net, ds, 21)
    finally:
        train_mod.confusion_matrix = real
    assert seen == [(520, 780), (400, 600)]  # scored at shorter side 520, or native without eval_size


def test_aux_classifier_at_ten_times_the_lr_and_decay_on_every_parameter(tmp_path):
    b = budget_from("digit_scenes", **TINY)
    train_segmentation(tiny_set(), b, checkpoint=tmp_path / "ck.pt", show_progress=False)
    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    assert all(g["weight_decay"] == b.weight_decay for g in groups)  # BN and biases included, as the reference
    from datarena.evaluate.train import param_groups

    net = deeplabv3(11, "resnet18")
    main, aux = param_groups(net, b)
    assert {id(p) for p in aux["params"]} == {id(p) for p in net.aux_classifier.parameters()}
    assert len(main["params"]) + len(aux["params"]) == len(list(net.parameters()))


def test_training_scale_follows_the_reference_base_size():
    from datarena.evaluate.train import augment

    b = budget_from("syntagen", base_size=520, crop_size=480, pretrained="none")
    rng = np.random.default_rng(0)
    image = np.zeros((512, 512), np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    x, m = augment(image, mask, b, rng)
    assert x.shape == (3, 480, 480) and m.shape == (480, 480)


# ---------------------------------------------------------------- two deadlines


def test_train_then_score_equals_train_with_test(tmp_path):
    train, test = tiny_set(6, seed=0), tiny_set(3, seed=1)
    write_npz(tmp_path / "train.npz", train)
    write_npz(tmp_path / "test.npz", test)
    b = budget_from("digit_scenes", image_size=(40, 40), **TINY)
    both = score_dataset(tmp_path / "train.npz", tmp_path / "test.npz", b, tmp_path / "both", show_progress=False)
    first, _ = train_dataset(tmp_path / "train.npz", b, tmp_path / "d1", show_progress=False)
    assert "miou" not in first and first["model_sha256"] == both["model_sha256"]
    assert json.loads((tmp_path / "d1" / "report.json").read_text())["model_sha256"] == first["model_sha256"]
    model, digest = load_model(tmp_path / "d1" / "model.pt", b, checksum=first["model_sha256"])
    second = score_model(model, tmp_path / "test.npz", b, tmp_path / "d2")
    assert second["miou"] == both["miou"] and second["per_class_iou"] == both["per_class_iou"]
    with pytest.raises(ConfigError, match="not the declared"):
        load_model(tmp_path / "d1" / "model.pt", b, checksum="0" * 64)
    for key in ("torch", "cuda", "datarena_version", "device", "device_name", "dtype"):
        assert key in both


def test_cli_train_without_test_then_score_with_checksum(tmp_path):
    write_npz(tmp_path / "train.npz", tiny_set(4, size=64))
    write_npz(tmp_path / "test.npz", tiny_set(2, size=64, seed=3))
    env = {**os.environ, "COLUMNS": "200"}
    base = [sys.executable, "-m", "datarena.cli", "evaluate"]
    out = subprocess.run([*base, "train", str(tmp_path / "train.npz"), "--budget", "digit_scenes", "--iterations", "2",
                          "--batch-size", "2", "--pretrained", "none", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    digest = json.loads((tmp_path / "m" / "report.json").read_text())["model_sha256"]
    assert digest in out.stdout and "mIoU" not in out.stdout
    ok = subprocess.run([*base, "score", str(tmp_path / "m" / "model.pt"), "--test", str(tmp_path / "test.npz"),
                         "--checksum", digest], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and "mIoU" in ok.stdout, ok.stderr
    bad = subprocess.run([*base, "score", str(tmp_path / "m" / "model.pt"), "--test", str(tmp_path / "test.npz"),
                          "--checksum", "f" * 64], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "not the declared" in bad.stderr


# ---------------------------------------------------------------- checksums of real checkpoints


def test_checksum_accepts_reference_and_ddp_checkpoints_refuses_pickles(tmp_path):
    state = deeplabv3(11, "resnet18").state_dict()
    plain = state_dict_sha256(state)
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"model": state, "optimizer": {}, "epoch": 3, "args": argparse.Namespace(lr=0.02, aux_loss=True)},
               tmp_path / "reference.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    assert checkpoint_sha256(tmp_path / "plain.pt") == plain
    assert checkpoint_sha256(tmp_path / "reference.pth") == plain
    assert checkpoint_sha256(tmp_path / "ddp.pt") == plain

    torch.save({"model": state, "hook": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|not allowed"):
        checkpoint_sha256(tmp_path / "evil.pt")
    out = subprocess.run([sys.executable, "-m", "datarena.cli", "evaluate", "checksum", str(tmp_path / "evil.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "weights-only" in out.stderr


class Evil:
    """Stands for an arbitrary pickled object."""


# ---------------------------------------------------------------- the validator checks what the loader reads


def test_validator_equals_loader(tmp_path):
    root = tmp_path / "voc"
    make_voc_dirs(root)
    img, mask = np.zeros((64, 64, 3), np.uint8), np.ones((64, 64), np.uint8)
    write_pair(root, "a", img, mask)
    write_pair(root, "b", img, mask)
    (root / "JPEGImages" / "b.jpg").rename(root / "JPEGImages" / "b.JPG")  # extension case
    rules = DatasetRules(size=(64, 64), num_classes=11)
    assert validate_dataset(root, rules).ok
    loaded = load_segmentation(root)
    assert len(loaded) == 2 and loaded[1][0].shape == (64, 64, 3)  # the loader reads B.JPG too
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\na\n")
    report = validate_dataset(root, rules)
    assert any("lists 'a' more than once" in msg for _, msg in report.problems)
    with pytest.raises(ConfigError, match="more than once"):
        load_segmentation(root)
    # the .npz form follows the same rules
    bad = SegmentationSet(np.zeros((2, 65, 64), np.uint8), np.full((2, 65, 64), 77, np.uint8), ("b", "x"))
    write_npz(tmp_path / "bad.npz", bad)
    problems = " ".join(msg for _, msg in validate_npz(tmp_path / "bad.npz", rules).problems)
    assert "must be 64x64" in problems and "values [77]" in problems
    # the image size is checked whatever the crop size of the budget
    b = budget_from("digit_scenes", crop_size=48, **{k: v for k, v in TINY.items() if k != "crop_size"})
    with pytest.raises(Exception, match="must be 64x64"):
        train_dataset(tmp_path / "bad.npz", b, tmp_path / "out", show_progress=False)
