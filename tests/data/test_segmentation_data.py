"""VOC / npz datasets and the validator that reports every offending file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datarena.data.segmentation import (
    DatasetError,
    DatasetRules,
    SegmentationSet,
    VOCDataset,
    load_segmentation,
    validate_dataset,
    write_npz,
    write_voc,
)


def tiny_set(n=4, size=16, classes=21):
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size)
    images = np.stack([np.broadcast_to(ramp[None, :, None] * (i + 1) / n, (size, size, 3)) for i in range(n)]).astype(np.uint8)
    masks = rng.integers(0, classes, size=(n, size, size)).astype(np.uint8)
    masks[:, 0, 0] = 255
    return SegmentationSet(images=images, masks=masks, classes=tuple(f"c{i}" for i in range(classes)))


def test_voc_round_trip(tmp_path):
    data = tiny_set()
    write_voc(tmp_path / "voc", data)
    back = VOCDataset(tmp_path / "voc")
    assert len(back) == 4 and back.classes == data.classes
    img, mask = back[2]
    assert img.shape == (16, 16, 3)
    np.testing.assert_array_equal(mask, data.masks[2])  # masks are lossless
    assert np.abs(img.astype(int) - data.images[2]).mean() < 4  # JPEG is lossy
    assert Image.open(tmp_path / "voc/SegmentationClass/000002.png").mode == "P"
    assert validate_dataset(tmp_path / "voc", DatasetRules(size=(16, 16))).ok


def test_npz_round_trip(tmp_path):
    data = tiny_set()
    write_npz(tmp_path / "d.npz", data)
    back = load_segmentation(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.masks, data.masks)
    assert back.names == data.names


def test_mismatched_set_is_refused():
    with pytest.raises(Exception, match="every image needs one mask"):
        SegmentationSet(images=np.zeros((2, 4, 4), np.uint8), masks=np.zeros((3, 4, 4), np.uint8), classes=("a", "b"))


def test_validator_reports_every_problem(tmp_path):
    root = write_voc(tmp_path / "bad", tiny_set(n=6))
    # wrong size (image and mask), stray mask values, corrupt PNG, unpaired image, unpaired mask
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "JPEGImages/000000.jpg")
    Image.fromarray(np.full((16, 16), 77, np.uint8), mode="L").save(root / "SegmentationClass/000001.png")
    (root / "SegmentationClass/000002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "SegmentationClass/000003.png").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(root / "SegmentationClass/orphan.png")
    report = validate_dataset(root, DatasetRules(size=(16, 16), max_pairs=3))
    text = "\n".join(f"{f}: {m}" for f, m in report.problems)
    assert "JPEGImages/000000.jpg: is 16x20" in text
    assert "SegmentationClass/000000.png: size 16x16 differs from its image 16x20" in text
    assert "SegmentationClass/000001.png: values [77]" in text
    assert "SegmentationClass/000002.png: cannot be read" in text
    assert "JPEGImages/000003.jpg: has no mask" in text
    assert "SegmentationClass/orphan.png: has no image" in text
    assert "5 pairs, the limit is 3" in text
    assert "train.txt: lists '000003', which has no image+mask pair" in text  # the loader would read it
    with pytest.raises(DatasetError, match="8 problems"):
        report.raise_for_problems()


def test_validator_defaults_are_the_challenge_rules(tmp_path):
    root = write_voc(tmp_path / "small", tiny_set(n=1))
    report = validate_dataset(root)  # 512x512 required by default
    assert any("must be 512x512" in m for _, m in report.problems)
    assert DatasetRules().max_pairs == 10_000 and DatasetRules().num_classes == 21
