"""`datarena evaluate`: the fixed scoring instrument (validate, train, score, checksum)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.common import (
    _device,
    app,
    console,
)
from datarena.errors import DatarenaError

evaluate_app = typer.Typer(help="Fixed evaluators: score a segmentation dataset with DeepLabv3, validate it, checksum a model.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("checksum")
def evaluate_checksum(model: Path = typer.Argument(..., help="A saved state_dict (.pt), or a checkpoint with a 'model' entry.")) -> None:
    """sha256 of a model's canonical state_dict serialisation (sorted keys, dtype, shape, bytes)."""
    from datarena.evaluate.checksum import checkpoint_sha256

    if not model.exists():
        raise DatarenaError(f"{model} does not exist; pass the path of a saved model.")
    try:
        print(checkpoint_sha256(model))
    except Exception as exc:  # noqa: BLE001 - an arbitrary pickle or a file of something else
        raise DatarenaError(f"{model} is not a model state_dict datarena will read (plain state_dict, a checkpoint "
                            f"with 'model', or a DDP 'module.' state_dict; loaded weights-only): "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None


@evaluate_app.command("validate")
def evaluate_validate(
    dataset: Path = typer.Argument(..., help="A VOC-layout dataset directory."),
    size: int = typer.Option(512, help="Required image and mask size (square); 0 = any size."),
    num_classes: int = typer.Option(21, "--num-classes", help="Mask values must be < this, or 255."),
    max_pairs: int = typer.Option(10_000, "--max-pairs", help="Most pairs allowed."),
) -> None:
    """Check a dataset against the challenge rules; lists every offending file."""
    from datarena.data.segmentation import DatasetRules, validate_dataset

    report = validate_dataset(dataset, DatasetRules(size=(size, size) if size else None, num_classes=num_classes, max_pairs=max_pairs))
    report.raise_for_problems()
    console.print(f"{dataset}: {report.n_pairs} pairs, all valid")


@evaluate_app.command("train")
def evaluate_train(
    dataset: Path = typer.Argument(..., help="Training set: a VOC-layout directory or a .npz file."),
    test: Path = typer.Option(None, "--test", help="Test set (VOC directory or .npz); without it only train and write the model and its checksum (deadline 1)."),
    out: Path = typer.Option(Path("datarena-score"), "--out", help="Directory for report.json, model.pt, overlays.png, checkpoint.pt."),
    budget: str = typer.Option("syntagen", "--budget", help="Preset: syntagen (10k it, batch 8, 512 crop, ResNet-50), syntagen-100k, aerial_scenes (CPU scale, 3 seeds), digit_scenes."),
    iterations: int = typer.Option(None, "--iterations", help="Override the preset's iteration cap."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the batch size."),
    crop_size: int = typer.Option(None, "--crop-size", help="Override the crop size."),
    backbone: str = typer.Option(None, "--backbone", help="resnet18, resnet34, resnet50 or resnet101."),
    seed: int = typer.Option(None, "--seed", help="Training seed."),
    seeds: int = typer.Option(None, "--seeds", help="Training seeds the score averages (its interval adds their spread)."),
    weights: Path = typer.Option(None, "--backbone-weights", help="Local ImageNet ResNet state_dict (nothing is downloaded)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Backbone start: imagenet (torchvision's file, the syntagen default), digits (a cached digit-pretrained trunk) or none (random, on purpose)."),
    class_weights: str = typer.Option(None, "--class-weights", help="Loss weights: uniform (the protocol), balanced (median-frequency) or sqrt (their square root)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the dataset-rules check."),
) -> None:
    """Score a dataset: train DeepLabv3 under a fixed budget, report mIoU on the test set and the model checksum."""
    device = _device(device)
    from datarena.evaluate.train import budget_from, score_dataset, train_dataset

    b = budget_from(budget, iterations=iterations, batch_size=batch_size, crop_size=crop_size, backbone=backbone, seed=seed,
                  seeds=seeds, pretrained=pretrained, class_weights=class_weights)
    validate = "skip" if no_validate else "strict"
    if test is None:
        report, _ = train_dataset(dataset, b, out, resume=resume, backbone_weights=weights, device=device, validate=validate)
        console.print(f"trained {report['iterations']} it ({report['train_images_per_second']:.1f} img/s); "
                      f"model {out / 'model.pt'}")
        console.print(f"model sha256 {report['model_sha256']}  (declare it; score later with "
                      f"`datarena evaluate score {out / 'model.pt'} --test TESTSET --checksum {report['model_sha256'][:12]}…`)")
        return
    report = score_dataset(dataset, test, b, out, resume=resume, backbone_weights=weights, device=device, validate=validate)
    _print_scores(report)
    console.print(f"({report['iterations']} it, {report['train_images_per_second']:.1f} img/s)")
    console.print(f"model sha256 {report['model_sha256']}")
    if report["backbone_sha256"]:
        console.print(f"started from {report['backbone_weights']} (sha256 {report['backbone_sha256']})")
    console.print(f"report: {out / 'report.json'}  overlays: {out / 'overlays.png'}")


def _print_scores(report: dict) -> None:
    table = Table(title=f"per-class IoU on {report['n_test_images']} test images")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in report["per_class_iou"].items():
        table.add_row(name, "-" if iou is None else f"{iou:.3f}")
    console.print(table)
    spread = "seeds and test images" if report.get("seed_spread_included") else "test images only (one seed)"
    console.print(f"mIoU {report['miou']:.4f}, 95 % interval [{report['miou_low']:.4f}, {report['miou_high']:.4f}] "
                  f"({spread})  pixel accuracy {report['pixel_accuracy']:.4f}")


@evaluate_app.command("score")
def evaluate_score(
    model: Path = typer.Argument(..., help="model.pt written by `datarena evaluate train` (or a checkpoint)."),
    test: Path = typer.Option(..., "--test", help="The test set (VOC directory or .npz)."),
    checksum: str = typer.Option(None, "--checksum", help="The checksum declared at deadline 1: a different model is refused."),
    budget: str = typer.Option(None, "--budget", help="Budget preset (default: the one in report.json beside MODEL, else syntagen)."),
    backbone: str = typer.Option(None, "--backbone", help="Override the backbone."),
    out: Path = typer.Option(None, "--out", help="Where report.json and overlays.png go (default: MODEL's directory)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
) -> None:
    """Score a frozen model on a test set (deadline 2), refusing one whose checksum differs from the declared one."""
    device = _device(device)
    import json

    from datarena.evaluate.train import (
        Budget,
        budget_from,
        load_model,
        run_environment,
        score_model,
    )

    recorded = model.parent / "report.json"
    if budget is None and recorded.is_file():
        b = Budget.model_validate(json.loads(recorded.read_text())["budget"])
        if backbone:
            b = b.model_copy(update={"backbone": backbone})
    else:
        b = budget_from(budget or "syntagen", backbone=backbone)
    net, digest = load_model(model, b, device, checksum)
    out = out or model.parent
    report = {"model": str(model), "model_sha256": digest, "budget": b.model_dump(), **run_environment(device),
              **score_model(net, test, b, out, device)}
    (out / "score.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _print_scores(report)
    console.print(f"model sha256 {digest}{' (matches the declared checksum)' if checksum else ''}; "
                  f"report {out / 'score.json'}")
