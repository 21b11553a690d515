"""The scoring protocol: augmentation, deterministic + resumable training, mIoU rising, the CLI report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from datarena.data.segmentation import (
    IGNORE,
    SegmentationSet,
    load_segmentation,
    write_npz,
    write_voc,
)
from datarena.evaluate.train import (
    PRESETS,
    augment,
    budget_from,
    class_frequency_weights,
    evaluate_segmentation,
    loss_weights,
    make_batch,
    poly_lr,
    train_segmentation,
)
from datarena.scenes.grammar import load_grammar
from datarena.scenes.render import render

TINY = dict(batch_size=4, crop_size=48, backbone="resnet18", num_classes=11, checkpoint_every=2, pretrained="none",
            class_weights="uniform")


def rendered_set(grammar: str, n: int, seed: int) -> SegmentationSet:
    g = load_grammar(grammar)
    with torch.no_grad():
        r = render(g.sample(n, seed), g)
    images = (r.images[:, 0].numpy() * 255 + 0.5).astype(np.uint8)
    return SegmentationSet(images=images, masks=r.masks.numpy(), classes=tuple(["background"] + [str(d) for d in range(10)]))


@pytest.fixture(scope="module")
def digits():
    return rendered_set("digit_scenes", 160, 0), rendered_set("digit_scenes", 40, 99)


def test_presets_follow_the_challenge_rules():
    b = PRESETS["syntagen"]
    assert (b.iterations, b.batch_size, b.crop_size, b.backbone, b.num_classes) == (10_000, 8, 480, "resnet50", 21)
    assert (b.momentum, b.weight_decay, b.poly_power, b.aux_weight, b.aux_lr_mult) == (0.9, 1e-4, 0.9, 0.5, 10.0)
    assert (b.base_size, b.eval_size, b.image_size) == (520, 520, (512, 512))  # torchvision's reference recipe
    assert PRESETS["syntagen-100k"].iterations == 100_000
    assert (b.pretrained, b.class_weights) == ("imagenet", "uniform")  # the challenge: ImageNet file, plain loss
    small = PRESETS["digit_scenes"]
    assert (small.backbone, small.crop_size, small.pretrained, small.class_weights) == ("resnet18", 64, "digits", "balanced")
    assert poly_lr(b, 0) == b.lr and poly_lr(b, 5000) == pytest.approx(b.lr * 0.5**0.9)
    warm = budget_from("syntagen", warmup_iterations=100)
    assert poly_lr(warm, 0) == pytest.approx(b.lr / 100) and poly_lr(warm, 49) == pytest.approx(poly_lr(b, 49) / 2)
    assert poly_lr(warm, 100) == poly_lr(b, 100)  # after the warm-up: the poly schedule itself
    with pytest.raises(Exception, match="unknown backbone"):
        budget_from("syntagen", backbone="vgg")


def test_augment_scales_pads_with_ignore_and_crops():
    b = budget_from("digit_scenes", crop_size=80, scale_min=0.5, scale_max=0.5)
    image = np.full((64, 64), 200, np.uint8)
    mask = np.ones((64, 64), np.uint8)
    x, m = augment(image, mask, b, np.random.default_rng(0))
    assert x.shape == (3, 80, 80) and m.shape == (80, 80)
    assert int((m == 1).sum()) == 32 * 32 and int((m == IGNORE).sum()) == 80 * 80 - 32 * 32


def test_balanced_class_weights_follow_median_frequency():
    # class 0 fills 3/4 of both images, class 1 a quarter of the first, class 2 a quarter of the second
    # minus 4 ignored pixels; class 3 never appears
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :2] = 1
    masks[1, :2] = 2
    masks[1, 0, :4] = IGNORE
    data = SegmentationSet(images=np.zeros((2, 8, 8), np.uint8), masks=masks, classes=("a", "b", "c", "d"))
    w = class_frequency_weights(data, 4).numpy()
    f = np.array([96 / 124, 16 / 64, 12 / 60])  # pixels of c / labelled pixels of the images holding c
    assert w == pytest.approx(np.r_[np.median(f) / f, 1.0])
    assert w[0] < w[1] < w[2]
    # the loss takes them as they are ("balanced"), as their square root ("sqrt"), or none ("uniform")
    b = budget_from("aerial_scenes", num_classes=4)
    assert b.class_weights == "sqrt"
    assert loss_weights(data, b).numpy() == pytest.approx(np.sqrt(w))
    assert loss_weights(data, b.model_copy(update={"class_weights": "balanced"})).numpy() == pytest.approx(w)
    assert loss_weights(data, b.model_copy(update={"class_weights": "uniform"})) is None
    with pytest.raises(Exception, match="class_weights"):
        budget_from("digit_scenes", class_weights="inverse")


def test_balanced_weights_read_voc_masks_and_reach_the_loss(digits, tmp_path):
    train, _ = digits
    voc = load_segmentation(write_voc(tmp_path / "voc", train))
    assert torch.equal(class_frequency_weights(voc, 11), class_frequency_weights(train, 11))
    b = budget_from("digit_scenes", iterations=2, **TINY)
    uniform = train_segmentation(train, b, show_progress=False)
    balanced = train_segmentation(train, b.model_copy(update={"class_weights": "balanced"}), show_progress=False)
    assert balanced.checksum != uniform.checksum
    sqrt = train_segmentation(train, b.model_copy(update={"class_weights": "sqrt"}), show_progress=False)
    assert sqrt.checksum not in (uniform.checksum, balanced.checksum)


def test_batches_depend_only_on_seed_and_iteration(digits):
    train, _ = digits
    b = budget_from("digit_scenes", **TINY)
    x1, m1 = make_batch(train, b, 7)
    x2, m2 = make_batch(train, b, 7)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    assert not torch.equal(make_batch(train, b, 8)[0], x1)


def test_training_is_deterministic_and_resumable(digits, tmp_path):
    train, _ = digits
    b = budget_from("digit_scenes", iterations=4, **TINY)
    straight = train_segmentation(train, b, show_progress=False)
    again = train_segmentation(train, b, show_progress=False)
    assert straight.checksum == again.checksum
    ckpt = tmp_path / "ckpt.pt"
    first = train_segmentation(train, b, checkpoint=ckpt, stop_after=2, show_progress=False)
    assert first.iterations == 2 and first.checksum != straight.checksum
    resumed = train_segmentation(train, b, checkpoint=ckpt, resume=True, show_progress=False)
    assert resumed.iterations == 4 and resumed.checksum == straight.checksum
    with pytest.raises(Exception, match="different budget"):
        train_segmentation(train, b.model_copy(update={"lr": 0.5}), checkpoint=ckpt, resume=True, show_progress=False)


def test_a_checkpoint_from_before_a_budget_setting_resumes_with_its_default(digits, tmp_path):
    """A setting added since a checkpoint was written takes its default on resume; a stored budget
    that no longer validates is a different budget (a ConfigError), not a traceback."""
    from datarena.errors import ConfigError

    train, _ = digits
    b = budget_from("digit_scenes", iterations=4, **TINY)
    straight = train_segmentation(train, b, show_progress=False)
    ckpt = tmp_path / "ckpt.pt"
    train_segmentation(train, b, checkpoint=ckpt, stop_after=2, show_progress=False)
    state = torch.load(ckpt, weights_only=False)
    del state["budget"]["warmup_iterations"]  # as written before the setting existed
    torch.save(state, ckpt)
    resumed = train_segmentation(train, b, checkpoint=ckpt, resume=True, show_progress=False)
    assert resumed.iterations == 4 and resumed.checksum == straight.checksum
    state["budget"]["lr"] = -1.0  # no longer a valid budget
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="different budget"):
        train_segmentation(train, b, checkpoint=ckpt, resume=True, show_progress=False)


def binary(data: SegmentationSet) -> SegmentationSet:
    masks = np.where((data.masks > 0) & (data.masks != IGNORE), 1, data.masks).astype(np.uint8)
    return SegmentationSet(images=data.images, masks=masks, classes=("background", "digit"))


def test_short_training_rises_well_above_chance(digits, tmp_path):
    train, test = (binary(d) for d in digits)
    # 60 iterations on 48 px crops at lr 0.05 (seeds 0-2 measured 0.648-0.668 mIoU, digit IoU 0.351-0.396)
    b = budget_from("digit_scenes", iterations=60, batch_size=8, crop_size=48, lr=0.05, num_classes=2,
                    checkpoint_every=1000, pretrained="none", class_weights="uniform")
    untrained = evaluate_segmentation(train_segmentation(train, b.model_copy(update={"iterations": 1, "lr": 1e-9}),
                                                         show_progress=False).model, test, 2)
    trained = train_segmentation(train, b, show_progress=False)
    scores = evaluate_segmentation(trained.model, test, 2, overlay_path=tmp_path / "overlays.png", class_names=train.classes)
    # chance: predicting all background gives ~0.45 mIoU here; a fresh model scores less (0.11)
    assert scores["miou"] > 0.6 and scores["miou"] > untrained["miou"] + 0.25, (scores["miou"], untrained["miou"])
    assert scores["per_class"]["digit"] > 0.3
    assert (tmp_path / "overlays.png").stat().st_size > 10_000


def test_evaluate_train_cli_writes_a_report(digits, tmp_path):
    train, test = digits
    write_npz(tmp_path / "train.npz", train)
    write_npz(tmp_path / "test.npz", test)
    out = tmp_path / "score"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "datarena.cli", "evaluate", "train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
           "--budget", "digit_scenes", "--iterations", "3", "--batch-size", "2", "--pretrained", "none", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["iterations"] == 3 and len(report["per_class_iou"]) == 11 and 0 <= report["miou"] <= 1
    assert "mIoU" in done.stdout and report["model_sha256"] in done.stdout
    checksum = subprocess.run([sys.executable, "-m", "datarena.cli", "evaluate", "checksum", str(out / "model.pt")],
                              capture_output=True, text=True, env=env)
    assert checksum.stdout.strip() == report["model_sha256"]
    bad = subprocess.run([*cmd[:-1], str(tmp_path / "x"), "--resume"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "cannot resume" in bad.stderr


def test_digit_pretrained_backbone_learns_is_cached_and_starts_training(digits, tmp_path, monkeypatch):
    from datarena.evaluate.deeplab import deeplabv3
    from datarena.evaluate.pretrain import digit_backbone, pretrain_digit_backbone

    _, accuracy = pretrain_digit_backbone("resnet18", steps=40, batch_size=32, show_progress=False)
    assert accuracy > 0.5, accuracy  # chance is 0.1
    monkeypatch.setenv("DATARENA_CACHE", str(tmp_path / "cache"))
    path, sha = digit_backbone("resnet18", steps=2, show_progress=False)
    stamp = path.stat().st_mtime_ns
    assert digit_backbone("resnet18", steps=2, show_progress=False) == (path, sha) and path.stat().st_mtime_ns == stamp
    saved = torch.load(path, weights_only=True)
    model = deeplabv3(11, "resnet18", backbone_weights=path)
    assert all(torch.equal(v, saved[k]) for k, v in model.backbone.state_dict().items())
    train, _ = digits
    b = budget_from("digit_scenes", iterations=2, pretrained="digits", pretrain_steps=2, batch_size=2, crop_size=48)
    result = train_segmentation(train, b, show_progress=False)
    assert result.backbone_sha256 == sha and result.backbone_weights == str(path)
    scratch = train_segmentation(train, b.model_copy(update={"pretrained": "none"}), show_progress=False)
    assert scratch.backbone_sha256 is None and scratch.checksum != result.checksum
    with pytest.raises(Exception, match="invalid budget: pretrained"):
        budget_from("digit_scenes", pretrained="cifar")


def test_training_leaves_the_global_rng_alone(digits):
    """A score depends on its budget's seed only, and computing it does not move the caller's RNG."""
    train, _ = digits
    b = budget_from("digit_scenes", iterations=2, **TINY)
    torch.manual_seed(1)
    first = train_segmentation(train, b, show_progress=False)
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))  # as if no training had run
    torch.manual_seed(2)
    second = train_segmentation(train, b, show_progress=False)
    assert first.checksum == second.checksum
