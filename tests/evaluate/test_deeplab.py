"""DeepLabv3 architecture parity with torchvision, mIoU and checksums (parts of issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datarena.evaluate.checksum import checkpoint_sha256, state_dict_sha256
from datarena.evaluate.deeplab import deeplabv3
from datarena.evaluate.metrics import confusion_matrix, segmentation_scores

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "deeplabv3_resnet50_state_dict.json"
LOCAL_REFERENCE = Path(__file__).parent / "data" / "deeplabv3_resnet50_state_dict.json"


@pytest.fixture(scope="module")
def resnet50_model():
    return deeplabv3(21, "resnet50", aux_loss=True)


def test_parameter_count(resnet50_model):
    assert sum(p.numel() for p in resnet50_model.parameters()) == 42_004_074
    no_aux = deeplabv3(21, "resnet50", aux_loss=False)
    assert sum(p.numel() for p in no_aux.parameters()) == 39_638_869


def test_state_dict_matches_torchvision_key_for_key(resnet50_model):
    ref_path = LOCAL_REFERENCE if LOCAL_REFERENCE.exists() else REFERENCE
    reference = json.loads(ref_path.read_text())
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in resnet50_model.state_dict().items()]
    assert len(ours) == len(reference) == 370
    assert ours == reference


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34"])
def test_small_backbones_forward(backbone):
    model = deeplabv3(11, backbone).eval()
    out = model(torch.zeros(2, 3, 64, 64))
    assert out["out"].shape == (2, 11, 64, 64) and out["aux"].shape == (2, 11, 64, 64)


def test_miou_on_hand_made_cases():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    assert segmentation_scores(confusion_matrix(truth, truth, 3))["miou"] == 1.0
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1]])
    s = segmentation_scores(confusion_matrix(pred, truth, 3))
    # class 0: tp 3, union 4 -> 0.75; class 1: tp 4, union 5 -> 0.8; class 2 absent from both: excluded
    assert s["per_class_iou"][:2] == [0.75, 0.8] and s["per_class_iou"][2] is None
    assert s["miou"] == pytest.approx(0.775) and s["pixel_accuracy"] == pytest.approx(7 / 8)
    ignore = truth.copy()
    ignore[0, 1] = 255  # the one wrong pixel is ignored
    assert segmentation_scores(confusion_matrix(pred, ignore, 3))["miou"] == 1.0


def test_checksum_stable_across_save_load_and_changes_with_a_step(tmp_path):
    model = deeplabv3(5, "resnet18")
    digest = state_dict_sha256(model.state_dict())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert checkpoint_sha256(tmp_path / "m.pt") == digest
    again = deeplabv3(5, "resnet18")
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True), strict=True)
    assert state_dict_sha256(again.state_dict()) == digest
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    loss = torch.nn.functional.cross_entropy(out["out"], torch.randint(0, 5, (2, 32, 32)))
    loss.backward()
    opt.step()
    assert state_dict_sha256(model.state_dict()) != digest


def test_checksum_cli(tmp_path):
    import subprocess
    import sys

    model = deeplabv3(3, "resnet18")
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    out = subprocess.run([sys.executable, "-m", "datarena.cli", "evaluate", "checksum", str(tmp_path / "ckpt.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == state_dict_sha256(model.state_dict())
    missing = subprocess.run([sys.executable, "-m", "datarena.cli", "evaluate", "checksum", str(tmp_path / "no.pt")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize("size", [(8, 8), (12, 20), (20, 12), (13, 13)])
def test_atrous_conv_drops_only_taps_that_read_padding(size):
    """ASPP's dilated 3x3 conv equals the plain conv on maps smaller than its rate on one side
    or both (the taps it drops read only zero padding), with the same gradients."""
    from datarena.evaluate.deeplab import AtrousConv

    torch.manual_seed(0)
    conv = AtrousConv(16, 8, 3, padding=12, dilation=12, bias=False)
    x = torch.randn(2, 16, *size, requires_grad=True)
    got = conv(x)
    want = torch.nn.functional.conv2d(x, conv.weight, None, 1, 12, 12)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(got)
    gx, gw = torch.autograd.grad(got, (x, conv.weight), g)
    wx, ww = torch.autograd.grad(want, (x, conv.weight), g)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ww, rtol=1e-5, atol=1e-5)
    if size == (13, 13):  # larger than the rate both ways: the plain conv itself
        assert torch.equal(got, want)
    else:  # a tap that reads data somewhere would have a nonzero gradient
        assert gw.abs().sum() > 0


@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 8)])
def test_atrous_conv_is_the_plain_conv_unless_3x3_padded_by_its_rate(kernel, padding):
    """The shortcut is exact only for ASPP's shape (3x3, padding = rate); any other conv on a map
    no larger than its rate runs the plain conv."""
    from datarena.evaluate.deeplab import AtrousConv

    torch.manual_seed(0)
    conv = AtrousConv(16, 8, kernel, padding=padding, dilation=4, bias=False)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(conv(x), torch.nn.functional.conv2d(x, conv.weight, None, 1, padding, 4))
