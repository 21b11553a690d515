"""The dataset evaluator: training throughput, and digit_scenes mIoU of a prior-grammar dataset
against a target-grammar dataset (the upper bound).

Run: .venv/bin/python benchmarks/bench_evaluator.py [--device cuda] [--n 2000] [--iterations 500]
     [--pretrained digits] [--class-weights balanced] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from datarena.data.segmentation import DIGIT_CLASSES, SegmentationSet
from datarena.evaluate.deeplab import deeplabv3
from datarena.evaluate.train import budget_from, evaluate_segmentation, train_segmentation
from datarena.metasim.train import with_split
from datarena.scenes.grammar import load_grammar
from datarena.scenes.render import render_all


def throughput(backbone: str, size: int, batch: int, classes: int, steps: int, device: str, amp: bool = False) -> float:
    """Images/s of bare training steps on one resident batch (no data loading)."""
    model = deeplabv3(classes, backbone).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch, size, size), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss = F.cross_entropy(out["out"], y) + 0.5 * F.cross_entropy(out["aux"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def trainer_throughput(iterations: int, device: str) -> tuple[float, float]:
    """The real trainer (augmentation, fp32, poly LR) under the syntagen budget on random 512x512 pairs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 512, 512, 3), dtype=np.uint8)
    masks = rng.integers(0, 21, size=(16, 512, 512), dtype=np.uint8)
    data = SegmentationSet(images, masks, tuple(str(c) for c in range(21)))
    budget = budget_from("syntagen")
    train_segmentation(data, budget, device=device, show_progress=False, stop_after=2)  # warm-up
    result = train_segmentation(data, budget, device=device, show_progress=False, stop_after=iterations)
    return result.images_per_second, result.seconds / iterations


def rendered(grammar, n: int, seed: int) -> SegmentationSet:
    r = render_all(grammar, n, seed)
    return SegmentationSet((r.images[:, 0].numpy() * 255 + 0.5).astype(np.uint8), r.masks.numpy(), DIGIT_CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2000, help="training scenes per dataset")
    parser.add_argument("--test", type=int, default=300, help="private test scenes")
    parser.add_argument("--iterations", type=int, default=None, help="override the digit_scenes preset")
    parser.add_argument("--lr", type=float, default=None, help="override the digit_scenes preset")
    parser.add_argument("--pretrained", default=None, help="override the preset's backbone start: none or digits")
    parser.add_argument("--class-weights", default=None, help="override the preset's loss weights: uniform or balanced")
    parser.add_argument("--seed", type=int, default=None, help="override the preset's training seed")
    parser.add_argument("--sources", nargs="+", choices=("prior", "target"), default=["prior", "target"],
                        help="which training datasets to score (separate processes can share the cores)")
    parser.add_argument("--r50-steps", type=int, default=2)
    parser.add_argument("--trainer-iterations", type=int, default=0,
                        help="also time the real trainer (syntagen budget, 512x512 random pairs) for this many iterations")
    parser.add_argument("--skip-miou", action="store_true", help="throughput only")
    parser.add_argument("--skip-throughput", action="store_true", help="digit_scenes mIoU only")
    args = parser.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}"
          f"{' (' + torch.cuda.get_device_name() + ')' if dev.startswith('cuda') else ''}, {torch.get_num_threads()} CPU threads")
    if dev.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    for amp in (() if args.skip_throughput else (False, True) if dev.startswith("cuda") else (False,)):
        r50 = throughput("resnet50", 512, 8, 21, args.r50_steps, dev, amp=amp)
        print(f"DeepLabv3-ResNet50 512x512 batch 8, bare train step ({'bf16 autocast' if amp else 'fp32'}): {r50:7.2f} images/s"
              f" -> 10,000 iterations take {10_000 * 8 / r50 / 3600:.2f} h")
    if args.trainer_iterations:
        ips, per_it = trainer_throughput(args.trainer_iterations, dev)
        print(f"train_segmentation, syntagen budget (fp32, CPU augmentation), {args.trainer_iterations} iterations: "
              f"{ips:.2f} images/s, {per_it:.3f} s/iteration -> 10,000 iterations take {10_000 * per_it / 3600:.2f} h")
    small = budget_from("digit_scenes", iterations=args.iterations, lr=args.lr, pretrained=args.pretrained,
                        class_weights=args.class_weights, seed=args.seed)
    sm = float("nan") if args.skip_throughput else throughput(small.backbone, small.crop_size, small.batch_size, small.num_classes, 20, dev)
    print(f"digit_scenes preset ({small.backbone} {small.crop_size}x{small.crop_size} batch {small.batch_size}): {sm:7.1f} images/s"
          f" -> {small.iterations} iterations take {small.iterations * small.batch_size / sm:.0f} s")
    if args.skip_miou:
        return
    target = load_grammar("digit_scenes_target")
    test = rendered(with_split(target, "heldout"), args.test, seed=12345)
    sources = {"prior": ("prior grammar (digit_scenes)", load_grammar("digit_scenes")),
               "target": ("target grammar, train digits (upper bound)", with_split(target, "train"))}
    for name, grammar in (sources[s] for s in args.sources):
        data = rendered(grammar, args.n, seed=1)
        t0 = time.perf_counter()
        result = train_segmentation(data, small, device=dev, show_progress=False)
        scores = evaluate_segmentation(result.model, test, small.num_classes, dev)
        print(f"digit_scenes mIoU {scores['miou']:.3f} (pretrained={small.pretrained}, class_weights={small.class_weights}, seed {small.seed})"
              f" (pixel acc {scores['pixel_accuracy']:.3f}) from {name}, "
              f"{args.n} scenes, {result.iterations} it, {time.perf_counter() - t0:.0f} s, sha256 {result.checksum[:12]}")


if __name__ == "__main__":
    main()
