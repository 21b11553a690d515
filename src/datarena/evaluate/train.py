"""Score a segmentation dataset: train DeepLabv3 under a fixed budget, report mIoU on a test set.

The protocol of the SyntaGen challenge: DeepLabv3-ResNet50, batch 8, an iteration cap (10,000 in
the final rules, 100,000 in the seed document), SGD momentum 0.9 and weight decay 1e-4, poly
learning-rate decay (power 0.9), auxiliary FCN loss weight 0.5, random scale 0.5-2.0, horizontal
flip and crop, cross-entropy ignoring 255. Every random choice of iteration i (which pairs,
scales, crops, flips, dropout) is drawn from `SeedSequence([seed, i])`, so a run is deterministic
for a seed on a given device and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, ValidationError

import datarena
from datarena.data.checksums import write_json
from datarena.data.segmentation import DIGIT_CLASSES, IGNORE, VOC_CLASSES, load_segmentation
from datarena.errors import ConfigError
from datarena.evaluate.checksum import state_dict_sha256
from datarena.evaluate.deeplab import BACKBONES, deeplabv3
from datarena.evaluate.metrics import confusion_matrix, segmentation_scores
from datarena.progress import progress_bar

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Budget(BaseModel):
    """What a scoring run may spend, and the fixed recipe it follows."""

    iterations: int = Field(10_000, ge=1)
    batch_size: int = Field(8, ge=1)
    crop_size: int = Field(512, ge=16)
    backbone: str = "resnet50"
    # where the backbone starts: "none" = random (or a local file passed as backbone_weights, e.g.
    # ImageNet weights), "digits" = the cached digit-pretrained trunk (evaluate.pretrain)
    pretrained: Literal["none", "digits"] = "none"
    pretrain_steps: int = Field(300, ge=1, description="steps of the digit pretraining (pretrained='digits')")
    num_classes: int = Field(21, ge=2)
    lr: float = Field(0.01, gt=0)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    aux_weight: float = 0.5
    # "uniform" = plain cross-entropy (the challenge protocol); "balanced" = median-frequency
    # balancing (Eigen & Fergus 2015): class c weighs median(f) / f_c, f_c = the share of class c
    # among the labelled pixels of the images that contain it, counted once over the dataset
    class_weights: Literal["uniform", "balanced"] = "uniform"
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(2.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(500, ge=1)


PRESETS: dict[str, Budget] = {
    # the challenge's final rules
    "syntagen": Budget(),
    # the seed document's original cap
    "syntagen-100k": Budget(iterations=100_000),
    # CPU scale: 64x64 digit scenes, 11 classes, minutes on 2 cores. From random weights and a
    # plain loss this budget learns only the background; a digit-pretrained trunk (the CPU
    # stand-in for ImageNet weights) with median-frequency class weights learns the digits.
    "digit_scenes": Budget(iterations=500, batch_size=16, crop_size=64, backbone="resnet18", num_classes=11,
                           lr=0.02, checkpoint_every=100, pretrained="digits", class_weights="balanced"),
}


def budget_from(preset: str, **overrides) -> Budget:
    if preset not in PRESETS:
        raise ConfigError(f"unknown budget preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    base = PRESETS[preset].model_dump()
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        budget = Budget.model_validate(base)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid budget: {problems}") from None
    if budget.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {budget.backbone!r}; choose one of {', '.join(BACKBONES)}.")
    return budget


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> ImageNet-normalised, as the backbones expect."""
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    rgb = _as_rgb(image)
    rgb = rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb)  # PIL arrays are read-only
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    return normalise(x)


def augment(image: np.ndarray, mask: np.ndarray, budget: Budget, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, pad (image 0 after normalisation, mask 255), random crop, random flip."""
    x = _to_tensor(image)
    m = torch.from_numpy(np.ascontiguousarray(mask)).long()[None, None].float()
    scale = rng.uniform(budget.scale_min, budget.scale_max)
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    m = F.interpolate(m, size=(nh, nw), mode="nearest")
    c = budget.crop_size
    ph, pw = max(c - nh, 0), max(c - nw, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        m = F.pad(m, (0, pw, 0, ph), value=float(IGNORE))
    top = int(rng.integers(0, x.shape[-2] - c + 1))
    left = int(rng.integers(0, x.shape[-1] - c + 1))
    x, m = x[..., top : top + c, left : left + c], m[..., top : top + c, left : left + c]
    if rng.random() < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    return x[0], m[0, 0].long()


def make_batch(dataset, budget: Budget, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(np.random.SeedSequence([budget.seed, iteration]))
    idx = rng.integers(0, len(dataset), size=budget.batch_size)
    pairs = [augment(*dataset[int(i)], budget, rng) for i in idx]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def class_frequency_weights(dataset, num_classes: int) -> torch.Tensor:
    """Median-frequency class weights of a dataset's masks (255 ignored); 1.0 for absent classes.
    Reads masks only (`dataset.mask(i)`): no image is decoded."""
    pixels = np.zeros(num_classes, dtype=np.int64)  # pixels of class c
    exposure = np.zeros(num_classes, dtype=np.int64)  # labelled pixels of the images that contain c
    for i in range(len(dataset)):
        mask = np.asarray(dataset.mask(i))
        counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]
        pixels += counts
        exposure[counts > 0] += int(counts.sum())
    present = pixels > 0
    freq = np.where(present, pixels / np.maximum(exposure, 1), 0.0)
    weights = np.ones(num_classes)
    if present.any():
        weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)


def poly_lr(budget: Budget, iteration: int) -> float:
    return budget.lr * (1.0 - iteration / budget.iterations) ** budget.poly_power


def _save_checkpoint(path: Path, model, opt, iteration: int, budget: Budget) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration,
                "budget": budget.model_dump()}, tmp)
    os.replace(tmp, path)


@dataclass
class TrainResult:
    model: torch.nn.Module
    iterations: int
    seconds: float
    images_per_second: float
    final_loss: float
    checksum: str
    backbone_weights: str | None = None
    backbone_sha256: str | None = None


def resolve_backbone(budget: Budget, backbone_weights: str | Path | None,
                     show_progress: bool = True) -> tuple[Path | None, str | None]:
    """The backbone file a run starts from (an explicit file wins over the budget's `pretrained`) and its sha256."""
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights {path} not found; pass a local ResNet state_dict file (nothing is downloaded).")
        return path, state_dict_sha256(torch.load(path, map_location="cpu", weights_only=True))
    if budget.pretrained == "digits":
        from datarena.evaluate.pretrain import digit_backbone

        # seed 0 always: the starting weights are fixed for an exercise, like ImageNet weights
        return digit_backbone(budget.backbone, budget.pretrain_steps, seed=0, show_progress=show_progress)
    return None, None


def train_segmentation(dataset, budget: Budget, checkpoint: str | Path | None = None, resume: bool = False,
                       backbone_weights: str | Path | None = None, device: str = "cpu",
                       show_progress: bool = True, stop_after: int | None = None,
                       on_progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train DeepLabv3 on `dataset` (items: (image, mask) uint8) under `budget`.

    With `checkpoint`, the state is saved every `checkpoint_every` iterations; with `resume`, a
    run restarts from it. `stop_after` ends early after that many iterations (tests, interruptions).
    `on_progress(iteration, total, {"loss", "img_s"})` is called after every iteration (a job
    records it; it may raise to stop the run, the last checkpoint stays).
    """
    if len(dataset) == 0:
        raise ConfigError("the dataset holds no image+mask pairs.")
    backbone_weights, backbone_sha = resolve_backbone(budget, backbone_weights, show_progress)
    weight = class_frequency_weights(dataset, budget.num_classes).to(device) if budget.class_weights == "balanced" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(budget.seed)  # the initial weights depend on the seed only
        model = deeplabv3(budget.num_classes, budget.backbone, aux_loss=True, backbone_weights=backbone_weights).to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=budget.lr, momentum=budget.momentum)
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise ConfigError(f"cannot resume: checkpoint {ckpt} does not exist.")
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state["budget"] != budget.model_dump():
            raise ConfigError(f"{ckpt} was written with a different budget; resume with the same settings.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["iteration"]
    end = budget.iterations if stop_after is None else min(budget.iterations, start + stop_after)
    model.train()
    loss_value = float("nan")
    t0 = time.perf_counter()
    with progress_bar(f"training deeplabv3-{budget.backbone}", total=budget.iterations, unit="it", enabled=show_progress) as advance:
        advance(start)
        for it in range(start, end):
            images, masks = make_batch(dataset, budget, it)
            images, masks = images.to(device), masks.to(device)
            torch.manual_seed(budget.seed * 1_000_003 + it)  # dropout of iteration i (global RNG, as nn.Dropout uses it)
            for group in opt.param_groups:
                group["lr"] = poly_lr(budget, it)
            out = model(images)
            loss = F.cross_entropy(out["out"], masks, weight=weight, ignore_index=IGNORE)
            loss = loss + budget.aux_weight * F.cross_entropy(out["aux"], masks, weight=weight, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
            if ckpt is not None and ((it + 1) % budget.checkpoint_every == 0 or it + 1 == end):
                _save_checkpoint(ckpt, model, opt, it + 1, budget)
            elapsed = time.perf_counter() - t0
            img_s = (it + 1 - start) * budget.batch_size / max(elapsed, 1e-9)
            advance(1, loss=loss_value, img_s=img_s)
            if on_progress is not None:
                on_progress(it + 1, budget.iterations, {"loss": loss_value, "img_s": img_s})
    seconds = time.perf_counter() - t0
    model.eval()
    return TrainResult(model, end, seconds, (end - start) * budget.batch_size / max(seconds, 1e-9), loss_value,
                       state_dict_sha256(model.state_dict()), str(backbone_weights) if backbone_weights else None,
                       backbone_sha)


@torch.no_grad()
def evaluate_segmentation(model: torch.nn.Module, testset, num_classes: int, device: str = "cpu",
                          overlay_path: str | Path | None = None, class_names: tuple[str, ...] | None = None,
                          n_overlays: int = 6) -> dict:
    """mIoU, per-class IoU and pixel accuracy on full test images; optionally a PNG of overlays."""
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    shown = []
    for i in range(len(testset)):
        image, mask = testset[i]
        pred = model(_to_tensor(image).to(device))["out"].argmax(1)[0].cpu().numpy()
        conf += confusion_matrix(pred, mask, num_classes)
        if len(shown) < n_overlays:
            shown.append((_as_rgb(image), mask, pred))
    scores = segmentation_scores(conf)
    names = class_names or tuple(str(c) for c in range(num_classes))
    scores["per_class"] = {names[c] if c < len(names) else str(c): v for c, v in enumerate(scores["per_class_iou"])}
    scores["n_test_images"] = len(testset)
    if overlay_path is not None:
        save_overlays(shown, overlay_path)
    return scores


def save_overlays(rows, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datarena.data.segmentation import PALETTE

    palette = np.array(PALETTE, dtype=np.uint8).reshape(256, 3)
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for r, (image, mask, pred) in enumerate(rows):
        for c, (title, shown) in enumerate((("image", image), ("truth", palette[mask]), ("prediction", palette[pred]))):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(shown)
            else:
                ax.imshow(image)
                ax.imshow(shown, alpha=0.6)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def score_dataset(dataset_path: str | Path, test_path: str | Path, budget: Budget, out: str | Path,
                  resume: bool = False, backbone_weights: str | Path | None = None, device: str = "cpu",
                  validate: Literal["strict", "skip"] = "strict", show_progress: bool = True,
                  on_progress: Callable[[int, int, dict], None] | None = None,
                  overlays_from: Literal["test", "dataset"] = "test") -> dict:
    """The full protocol: validate, train under the budget, score on the test set, write a report.

    `overlays_from="dataset"` draws overlays.png on the scored dataset's own first images, never
    on the test set (what a hosted challenge may show a team without leaking its test set).
    """
    from datarena.data.segmentation import DatasetRules, validate_dataset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    if validate == "strict" and dataset_path.is_dir():
        size = None if budget.crop_size != 512 else (512, 512)
        validate_dataset(dataset_path, DatasetRules(size=size, num_classes=budget.num_classes)).raise_for_problems()
    dataset = load_segmentation(dataset_path)
    testset = load_segmentation(test_path)
    names = tuple(testset.classes) if len(testset.classes) == budget.num_classes else (
        VOC_CLASSES if budget.num_classes == 21 else DIGIT_CLASSES if budget.num_classes == 11 else None)
    result = train_segmentation(dataset, budget, checkpoint=out / "checkpoint.pt", resume=resume,
                                backbone_weights=backbone_weights, device=device, show_progress=show_progress,
                                on_progress=on_progress)
    torch.save(result.model.state_dict(), out / "model.pt")
    scores = evaluate_segmentation(result.model, testset, budget.num_classes, device,
                                   out / "overlays.png" if overlays_from == "test" else None, names)
    if overlays_from == "dataset":
        own = [dataset[i] for i in range(min(6, len(dataset)))]
        with torch.no_grad():
            preds = [result.model(_to_tensor(img).to(device))["out"].argmax(1)[0].cpu().numpy() for img, _ in own]
        save_overlays([(_as_rgb(img), mask, pred) for (img, mask), pred in zip(own, preds, strict=True)],
                      out / "overlays.png")
    report = {
        "dataset": str(dataset_path), "n_pairs": len(dataset), "test": str(test_path),
        "budget": budget.model_dump(), "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
        "per_class_iou": scores["per_class"], "n_test_images": scores["n_test_images"],
        "model_sha256": result.checksum, "backbone_weights": result.backbone_weights,
        "backbone_sha256": result.backbone_sha256, "iterations": result.iterations, "train_seconds": result.seconds,
        "train_images_per_second": result.images_per_second, "final_loss": result.final_loss, "device": device,
        "torch": torch.__version__, "datarena_version": datarena.__version__,
    }
    write_json(out / "report.json", report)
    return report
