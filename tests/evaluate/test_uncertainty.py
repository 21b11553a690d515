"""Scores with their uncertainty: the bootstrap over test images, the seed spread, rank groups."""

from __future__ import annotations

import numpy as np
import pytest

from datarena.errors import ConfigError
from datarena.evaluate.train import budget_from, score_dataset
from datarena.evaluate.uncertainty import miou_of, rank_groups, score_interval


def confusions(n: int, accuracy: float, seed: int, pixels: int = 100) -> np.ndarray:
    """(n, 2, 2) per-image confusions of a two-class segmentation right `accuracy` of the time."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 2, 2), np.int64)
    for i in range(n):
        truth = rng.integers(0, 2, pixels)
        right = rng.random(pixels) < rng.uniform(accuracy - 0.2, accuracy + 0.2)
        pred = np.where(right, truth, 1 - truth)
        np.add.at(out[i], (truth, pred), 1)
    return out


def test_interval_holds_the_score_and_narrows_with_more_test_images():
    few, many = confusions(20, 0.7, 0), confusions(400, 0.7, 0)
    a, b = score_interval([few]), score_interval([many])
    for r, c in ((a, few), (b, many)):
        assert r["miou"] == pytest.approx(float(miou_of(c.sum(0))))
        assert r["miou_low"] < r["miou"] < r["miou_high"]
        assert r["seed_spread_included"] is False and r["std_seeds"] is None
    assert b["miou_half_width"] < 0.5 * a["miou_half_width"]  # ~ 1/sqrt(20) against 1/sqrt(400)


def test_seed_spread_widens_the_interval():
    test = confusions(100, 0.7, 1)
    shifted = [test.copy() for _ in range(3)]
    for k, c in enumerate(shifted):  # three training seeds that disagree by a few points
        c[:, 0, 0] += 3 * k
    one, three = score_interval(shifted[:1]), score_interval(shifted)
    assert three["seed_spread_included"] and len(three["seed_mious"]) == 3 and three["std_seeds"] > 0
    assert three["miou"] == pytest.approx(np.mean(three["seed_mious"]))
    assert three["miou_half_width"] > one["miou_half_width"]


def test_rank_groups_share_a_rank_until_an_interval_separates():
    rows = [{"miou_low": 0.55, "miou_high": 0.65}, {"miou_low": 0.50, "miou_high": 0.60},
            {"miou_low": 0.20, "miou_high": 0.30}, {"miou_low": 0.25, "miou_high": 0.54}]
    # 1 and 2 overlap; the 4th overlaps the 2nd but lies below the 1st; the 3rd lies below the first two
    assert rank_groups(rows) == [1, 1, 3, 2]
    assert rank_groups([{"miou_low": 0.1, "miou_high": 0.1}] * 3) == [1, 1, 1]


def test_a_malformed_seeds_setting_is_refused_by_name():
    with pytest.raises(ConfigError, match="seeds"):
        budget_from("digit_scenes", seeds=0)
    with pytest.raises(ConfigError, match="seeds"):
        budget_from("digit_scenes", seeds="three")


def test_a_score_of_two_seeds_averages_them(tmp_path):
    from datarena.data.segmentation import SegmentationSet, write_npz

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    masks = (images[..., 0] > 128).astype(np.uint8)
    data = SegmentationSet(images, masks, ("background", "bright"))
    write_npz(tmp_path / "d.npz", data)
    b = budget_from("digit_scenes", iterations=3, batch_size=4, crop_size=32, num_classes=2, pretrained="none",
                    class_weights="uniform", image_size=(32, 32), seeds=2)
    seen = []
    report = score_dataset(tmp_path / "d.npz", tmp_path / "d.npz", b, tmp_path / "out", show_progress=False,
                           on_progress=lambda it, total, info: seen.append((it, total)))
    assert report["seeds"] == 2 and len(report["seed_mious"]) == 2 and report["seed_spread_included"]
    assert report["miou"] == pytest.approx(np.mean(report["seed_mious"]))
    assert report["miou_low"] <= report["miou"] <= report["miou_high"]
    assert len(set(report["model_sha256_seeds"])) == 2 and report["model_sha256"] == report["model_sha256_seeds"][0]
    assert seen[-1] == (6, 6) and (tmp_path / "out" / "seeds" / "1" / "model.pt").is_file()


def test_rerun_tolerance_follows_the_measured_noise():
    from datarena.evaluate.uncertainty import rerun_tolerance

    three = {"seeds": 3, "std_seeds": 0.01, "miou_low": 0.1, "miou_high": 0.2}
    tol, basis = rerun_tolerance(three)
    assert tol == pytest.approx(1.959964 * np.sqrt(2 / 3) * 0.01) and "seed spread" in basis
    one = {"seeds": 1, "std_seeds": None, "miou_low": 0.12, "miou_high": 0.16}
    assert rerun_tolerance(one)[0] == pytest.approx(0.02)
    assert rerun_tolerance({"miou": 0.3})[0] == 0.02  # recorded before intervals existed
