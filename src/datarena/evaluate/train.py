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
from datarena.evaluate.normalise import normalise
from datarena.progress import progress_bar


class Budget(BaseModel):
    """What a scoring run may spend, and the fixed recipe it follows."""

    iterations: int = Field(10_000, ge=1)
    batch_size: int = Field(8, ge=1)
    crop_size: int = Field(480, ge=16)  # torchvision reference: RandomCrop(480)
    # training scale: the shorter side is resized to a random integer in [base/2, 2 base] (the
    # reference's RandomResize(260, 1040) for base 520); None = a factor in [scale_min, scale_max]
    base_size: int | None = Field(520, ge=8)
    # evaluation: image and mask resized so the shorter side is eval_size (mask nearest), as the
    # reference's eval preset; None = native size
    eval_size: int | None = Field(520, ge=8)
    image_size: tuple[int, int] | None = (512, 512)  # what the validator requires of the dataset (H, W)
    backbone: str = "resnet50"
    # where the backbone starts: "imagenet" = torchvision's published ImageNet file (hub cache or
    # backbone_weights, sha256-checked), "digits" = the cached digit-pretrained trunk (the CPU
    # stand-in), "none" = random initialisation on purpose
    pretrained: Literal["none", "digits", "imagenet"] = "imagenet"
    pretrain_steps: int = Field(300, ge=1, description="steps of the digit pretraining (pretrained='digits')")
    num_classes: int = Field(21, ge=2)
    lr: float = Field(0.01, gt=0)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    # linear warm-up (torchvision reference's --lr-warmup-epochs, counted in iterations): the LR
    # rises from lr / warmup_iterations to the poly schedule's value over the first iterations
    warmup_iterations: int = Field(0, ge=0)
    aux_weight: float = 0.5
    aux_lr_mult: float = Field(10.0, gt=0)  # reference: the aux classifier's parameters at 10x the LR
    # "uniform" = plain cross-entropy (the challenge protocol); "balanced" = median-frequency
    # balancing (Eigen & Fergus 2015): class c weighs median(f) / f_c, f_c = the share of class c
    # among the labelled pixels of the images that contain it, counted once over the dataset;
    # "sqrt" = the square root of those weights (half the balancing on a log scale)
    class_weights: Literal["uniform", "balanced", "sqrt"] = "uniform"
    scale_min: float = Field(0.5, gt=0)
    scale_max: float = Field(2.0, gt=0)
    seed: int = 0
    # training seeds a score averages (seed, seed + 1, ...); its interval adds their spread to
    # the bootstrap over test images (datarena.evaluate.uncertainty)
    seeds: int = Field(1, ge=1, le=10)
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
                           lr=0.02, checkpoint_every=100, pretrained="digits", class_weights="balanced",
                           base_size=None, eval_size=None, image_size=(64, 64)),
    # CPU scale: 64x64 aerial scenes (background, road, car, tree, house); the preset that resolves the
    # quality ladder (benchmarks/bench_scoring.py). Crops of images scaled 1.5-2.5x and evaluation
    # at 2x make a 7x4 px car span more than one cell of the stride-8 output; 3 seeds per score.
    # Square-root median-frequency weights at lr 0.04: the full weights painted cars twice their size
    # (the car IoU measured the bloat) and at lr 0.04 taught the prior grammar the target's cars
    # (docs/benchmarks.md, the quality ladder)
    "aerial_scenes": Budget(iterations=200, batch_size=8, crop_size=64, backbone="resnet18", num_classes=5,
                            lr=0.04, checkpoint_every=100, pretrained="none", class_weights="sqrt",
                            base_size=None, eval_size=128, image_size=(64, 64), scale_min=1.5, scale_max=2.5,
                            seeds=3),
}


def budget_from(preset: str, **overrides) -> Budget:
    if preset not in PRESETS:
        raise ConfigError(f"unknown budget preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    unknown = sorted(set(overrides) - set(Budget.model_fields))
    if unknown:
        raise ConfigError(f"unknown budget setting(s) {', '.join(unknown)}; the settings are "
                          f"{', '.join(Budget.model_fields)}.")
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


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    rgb = _as_rgb(image)
    rgb = rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb)  # PIL arrays are read-only
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    return normalise(x)


def augment(image: np.ndarray, mask: np.ndarray, budget: Budget, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, pad (image 0 after normalisation, mask 255), random crop, random flip."""
    x = _to_tensor(image)
    m = torch.from_numpy(np.array(mask, dtype=np.int64))[None, None].float()  # a writable copy (PIL arrays are not)
    h, w = x.shape[-2:]
    if budget.base_size:  # the shorter side to a random integer in [base/2, 2 base], as the reference
        scale = int(rng.integers(int(0.5 * budget.base_size), int(2.0 * budget.base_size) + 1)) / min(h, w)
    else:
        scale = rng.uniform(budget.scale_min, budget.scale_max)
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


def loss_weights(dataset, budget: Budget, device: str = "cpu") -> torch.Tensor | None:
    """The cross-entropy's class weights under `budget.class_weights`, on `device` (None = uniform)."""
    if budget.class_weights == "uniform":
        return None
    weights = class_frequency_weights(dataset, budget.num_classes)
    return (weights.sqrt() if budget.class_weights == "sqrt" else weights).to(device)


def poly_lr(budget: Budget, iteration: int) -> float:
    lr = budget.lr * (1.0 - iteration / budget.iterations) ** budget.poly_power
    if iteration < budget.warmup_iterations:
        lr *= (iteration + 1) / budget.warmup_iterations
    return lr


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
    """The backbone file a run starts from and its sha256 (of the file for ImageNet weights).

    `pretrained="imagenet"` takes torchvision's published file (an explicit `backbone_weights`
    or the hub cache) and refuses to start without it; an explicit file is checked against the
    published hashes whatever `pretrained` says.
    """
    if budget.pretrained == "imagenet" or backbone_weights is not None:
        from datarena.evaluate.imagenet import find_imagenet_weights

        w = find_imagenet_weights(budget.backbone, backbone_weights)
        return w.path, w.sha256
    if budget.pretrained == "digits":
        from datarena.evaluate.pretrain import digit_backbone

        # seed 0 always: the starting weights are fixed for an exercise, like ImageNet weights
        return digit_backbone(budget.backbone, budget.pretrain_steps, seed=0, show_progress=show_progress)
    return None, None


def param_groups(model, budget: Budget) -> list[dict]:
    """The reference's groups: backbone and classifier at the LR, the aux classifier at aux_lr_mult x;
    weight decay on every parameter (SGD's weight_decay, as the reference passes it)."""
    aux = [p for p in model.aux_classifier.parameters()] if model.aux_classifier is not None else []
    aux_ids = {id(p) for p in aux}
    main = [p for p in model.parameters() if id(p) not in aux_ids]
    groups = [{"params": main, "lr_mult": 1.0}]
    if aux:
        groups.append({"params": aux, "lr_mult": budget.aux_lr_mult})
    return groups


def rng_devices(device: str) -> list[int]:
    """The CUDA devices whose RNG a forked scope must save and restore (none on the CPU)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return [torch.device(device).index or 0]
    return []


def make_deterministic(device: str) -> None:
    """On CUDA: deterministic algorithms, no cuDNN autotuning, a fixed cuBLAS workspace."""
    if not str(device).startswith("cuda"):
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_environment(device: str) -> dict:
    """What a checksum depends on besides the data: versions, device, dtype."""
    import platform

    name = torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else (
        platform.processor() or platform.machine())
    # on the CPU the thread count changes the order of float sums, so a model's checksum depends on it
    threads = torch.get_num_threads() if not str(device).startswith("cuda") else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "datarena_version": datarena.__version__,
            "device": device, "device_name": name, "dtype": "float32", "cpu_threads": threads}


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
    make_deterministic(device)
    backbone_weights, backbone_sha = resolve_backbone(budget, backbone_weights, show_progress)
    weight = loss_weights(dataset, budget, device)
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(budget.seed)  # the initial weights depend on the seed only
        model = deeplabv3(budget.num_classes, budget.backbone, aux_loss=True, backbone_weights=backbone_weights).to(device)
    opt = torch.optim.SGD(param_groups(model, budget), lr=budget.lr, momentum=budget.momentum,
                          weight_decay=budget.weight_decay)
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise ConfigError(f"cannot resume: checkpoint {ckpt} does not exist.")
        state = torch.load(ckpt, map_location=device, weights_only=False)
        try:  # a setting added since the checkpoint was written takes its default
            same = Budget.model_validate(state["budget"]).model_dump() == budget.model_dump()
        except (ValidationError, TypeError):
            same = False
        if not same:
            raise ConfigError(f"{ckpt} was written with a different budget; resume with the same settings.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["iteration"]
    end = budget.iterations if stop_after is None else min(budget.iterations, start + stop_after)
    model.train()
    loss_value = float("nan")
    t0 = time.perf_counter()
    # dropout draws from the global RNG: seeded per iteration inside a fork, so the caller's
    # RNG state is left as it was and the run depends on the budget's seed alone
    with torch.random.fork_rng(devices=rng_devices(device)):
        with progress_bar(f"training deeplabv3-{budget.backbone}", total=budget.iterations, unit="it", enabled=show_progress) as advance:
            advance(start)
            for it in range(start, end):
                images, masks = make_batch(dataset, budget, it)
                images, masks = images.to(device), masks.to(device)
                torch.manual_seed(budget.seed * 1_000_003 + it)  # dropout of iteration i (global RNG, as nn.Dropout uses it)
                for group in opt.param_groups:
                    group["lr"] = poly_lr(budget, it) * group["lr_mult"]
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
def resize_for_eval(image: np.ndarray, mask: np.ndarray, eval_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Shorter side to eval_size: the image bilinear, the mask nearest (the reference's eval preset)."""
    if not eval_size:
        return image, mask
    h, w = mask.shape
    nh, nw = (eval_size, max(1, round(w * eval_size / h))) if h <= w else (max(1, round(h * eval_size / w)), eval_size)
    if (nh, nw) == (h, w):
        return image, mask
    from PIL import Image

    img = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((nw, nh), Image.BILINEAR))
    m = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize((nw, nh), Image.NEAREST))
    return img, m


def evaluate_segmentation(model: torch.nn.Module, testset, num_classes: int, device: str = "cpu",
                          overlay_path: str | Path | None = None, class_names: tuple[str, ...] | None = None,
                          n_overlays: int = 6, eval_size: int | None = None,
                          per_image: list | None = None) -> dict:
    """mIoU, per-class IoU and pixel accuracy on the test images (shorter side eval_size, or native);
    optionally a PNG of overlays. `per_image`, a list, receives each image's confusion matrix
    (what the score's interval is bootstrapped from)."""
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    shown = []
    for i in range(len(testset)):
        image, mask = resize_for_eval(*testset[i], eval_size)
        pred = model(_to_tensor(image).to(device))["out"].argmax(1)[0].cpu().numpy()
        one = confusion_matrix(pred, mask, num_classes)
        conf += one
        if per_image is not None:
            per_image.append(one)
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


def _class_names(budget: Budget, testset=None) -> tuple[str, ...] | None:
    if testset is not None and len(testset.classes) == budget.num_classes:
        return tuple(testset.classes)
    return VOC_CLASSES if budget.num_classes == 21 else DIGIT_CLASSES if budget.num_classes == 11 else None


def check_dataset(dataset_path: str | Path, budget: Budget) -> None:
    """Refuse a dataset the budget cannot score; the image size is checked whatever the crop size."""
    from datarena.data.segmentation import DatasetRules, validate_segmentation

    rules = DatasetRules(size=budget.image_size, num_classes=budget.num_classes)
    validate_segmentation(Path(dataset_path), rules).raise_for_problems()


def train_dataset(dataset_path: str | Path, budget: Budget, out: str | Path, resume: bool = False,
                  backbone_weights: str | Path | None = None, device: str = "cpu",
                  validate: Literal["strict", "skip"] = "strict", show_progress: bool = True,
                  on_progress: Callable[[int, int, dict], None] | None = None,
                  overlays_from: Literal["test", "dataset", "none"] = "test") -> tuple[dict, torch.nn.Module]:
    """Deadline 1: validate, train under the budget, write model.pt and report.json (checksum; no test set)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset_path = Path(dataset_path)
    if validate == "strict":
        check_dataset(dataset_path, budget)
    dataset = load_segmentation(dataset_path)
    result = train_segmentation(dataset, budget, checkpoint=out / "checkpoint.pt", resume=resume,
                                backbone_weights=backbone_weights, device=device, show_progress=show_progress,
                                on_progress=on_progress)
    torch.save(result.model.state_dict(), out / "model.pt")
    if overlays_from == "dataset":
        own = [dataset[i] for i in range(min(6, len(dataset)))]
        with torch.no_grad():
            preds = [result.model(_to_tensor(img).to(device))["out"].argmax(1)[0].cpu().numpy() for img, _ in own]
        save_overlays([(_as_rgb(img), mask, pred) for (img, mask), pred in zip(own, preds, strict=True)],
                      out / "overlays.png")
    report = {
        "dataset": str(dataset_path), "n_pairs": len(dataset), "budget": budget.model_dump(),
        "model_sha256": result.checksum, "backbone_weights": result.backbone_weights,
        "backbone_sha256": result.backbone_sha256, "iterations": result.iterations, "train_seconds": result.seconds,
        "train_images_per_second": result.images_per_second, "final_loss": result.final_loss,
        **run_environment(device),
    }
    write_json(out / "report.json", report)
    return report, result.model


def load_model(model_path: str | Path, budget: Budget, device: str = "cpu",
               checksum: str | None = None) -> tuple[torch.nn.Module, str]:
    """A frozen model for scoring; refused when its checksum differs from the declared one."""
    from datarena.evaluate.checksum import checkpoint_state

    path = Path(model_path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass the model.pt written by `datarena evaluate train`.")
    state = checkpoint_state(path)
    digest = state_dict_sha256(state)
    if checksum and digest != checksum.strip().lower():
        raise ConfigError(f"{path} has checksum {digest}, not the declared {checksum}: this is not the model "
                          f"frozen at deadline 1.")
    model = deeplabv3(budget.num_classes, budget.backbone, aux_loss=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path} is not a {budget.backbone} DeepLabv3 with {budget.num_classes} classes "
                          f"(pass the budget it was trained with): {str(exc)[:300]}") from None
    return model.to(device).eval(), digest


def score_model(model: torch.nn.Module, test_path: str | Path, budget: Budget, out: str | Path, device: str = "cpu",
                overlays: bool = True, per_image: list | None = None, interval: bool = True) -> dict:
    """Deadline 2: mIoU (with its 95 % interval over test images), per-class IoU and pixel accuracy
    of a trained model on the test set."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    testset = load_segmentation(test_path)
    confusions = [] if per_image is None else per_image
    scores = evaluate_segmentation(model, testset, budget.num_classes, device,
                                   out / "overlays.png" if overlays else None, _class_names(budget, testset),
                                   eval_size=budget.eval_size, per_image=confusions)
    out_scores = {"test": str(test_path), "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
                  "per_class_iou": scores["per_class"], "n_test_images": scores["n_test_images"],
                  "eval_size": budget.eval_size}
    if interval:  # (score_dataset asks for none: it bootstraps once over all its seeds)
        out_scores.update({k: v for k, v in _interval([confusions], budget.num_classes).items() if k != "miou"})
    return out_scores


def _interval(per_seed: list[list[np.ndarray]], num_classes: int) -> dict:
    from datarena.evaluate.uncertainty import score_interval

    stacks = [np.stack(c) if c else np.zeros((0, num_classes, num_classes), np.int64) for c in per_seed]
    return score_interval(stacks)


def train_and_score_seed(dataset_path: str | Path, test_path: str | Path, budget: Budget, k: int, out: str | Path,
                         resume: bool, backbone_weights: str | Path | None, device: str,
                         validate: Literal["strict", "skip"], show_progress: bool,
                         on_progress: Callable[[int, int, dict], None] | None,
                         overlays_from: str) -> tuple[dict, dict, np.ndarray]:
    """Seed `budget.seed + k` of a score: train it in OUT (k = 0) or OUT/seeds/K, score it on the
    test set; returns its training report, its test scores and its (n_images, C, C) confusions.

    `resume`: the first seed resumes from its checkpoint (and refuses when there is none); another
    seed resumes from its own when it has one and starts afresh otherwise (a worker lost before it
    began). Only the first seed validates the dataset and draws overlays."""
    from datarena.evaluate.parallel import seed_dir

    run = budget.model_copy(update={"seed": budget.seed + k})
    out_k = seed_dir(Path(out), k)
    first = k == 0
    trained, model = train_dataset(dataset_path, run, out_k, resume and (first or (out_k / "checkpoint.pt").is_file()),
                                   backbone_weights, device, validate if first else "skip", show_progress, on_progress,
                                   overlays_from if first else "none")
    per_image: list[np.ndarray] = []
    with torch.no_grad():
        scored = score_model(model, test_path, run, out_k, device, overlays=first and overlays_from == "test",
                             per_image=per_image, interval=False)
    c = budget.num_classes
    return trained, scored, np.stack(per_image) if per_image else np.zeros((0, c, c), np.int64)


def score_dataset(dataset_path: str | Path, test_path: str | Path, budget: Budget, out: str | Path,
                  resume: bool = False, backbone_weights: str | Path | None = None, device: str = "cpu",
                  validate: Literal["strict", "skip"] = "strict", show_progress: bool = True,
                  on_progress: Callable[[int, int, dict], None] | None = None,
                  overlays_from: Literal["test", "dataset"] = "test") -> dict:
    """Both deadlines at once: train (train_dataset), then score on the test set (score_model).

    With `budget.seeds` > 1 the training runs again with seeds seed + 1, ... (in out/seeds/K/);
    on the CPU the seeds train side by side in processes of one thread each (evaluate.parallel:
    faster, and a seed's model does not depend on the core count). The score is their mean mIoU,
    its interval adds their spread; `model_sha256` stays the first seed's model (the one in out/).
    `overlays_from="dataset"` draws overlays.png on the scored dataset's own first images, never
    on the test set (what a hosted challenge may show a team without leaking its test set).
    """
    if budget.seeds > 1 and str(device) == "cpu":  # seeds side by side, one thread each (evaluate.parallel)
        from datarena.evaluate.parallel import train_seeds_in_processes

        if validate == "strict":
            check_dataset(dataset_path, budget)
        if resume and not (Path(out) / "checkpoint.pt").is_file():  # as the first seed's resume would say
            raise ConfigError(f"cannot resume: checkpoint {Path(out) / 'checkpoint.pt'} does not exist.")
        runs = train_seeds_in_processes(dataset_path, test_path, budget, out, resume, backbone_weights, show_progress,
                                        on_progress, overlays_from)
    else:
        total = budget.iterations * budget.seeds

        def progress_of(k: int):
            if on_progress is None:
                return None
            return lambda it, _total, info: on_progress(k * budget.iterations + it, total, info)

        runs = [train_and_score_seed(dataset_path, test_path, budget, k, out, resume, backbone_weights, device, validate,
                                     show_progress, progress_of(k), overlays_from) for k in range(budget.seeds)]
    trained, scored = runs[0][0], runs[0][1]
    confusions = [list(c) for _, _, c in runs]
    seed_checksums = [t["model_sha256"] for t, _, _ in runs]
    report = {**trained, **scored, **_interval(confusions, budget.num_classes), "seeds": budget.seeds,
              "model_sha256_seeds": seed_checksums}
    # per test image and seed: what a split of the test set (public / private parts) is scored from
    np.savez_compressed(Path(out) / "confusions.npz",
                        **{f"seed{k}": (np.stack(c) if c else np.zeros((0, budget.num_classes, budget.num_classes),
                                                                         np.int64))
                           for k, c in enumerate(confusions)})
    write_json(Path(out) / "report.json", report)
    return report
