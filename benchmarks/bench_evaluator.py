"""The dataset evaluator: training throughput, and digit_scenes mIoU of a prior-grammar dataset
against a target-grammar dataset (the upper bound).

Run: .venv/bin/python benchmarks/bench_evaluator.py [--device cuda] [--n 2000] [--iterations 500]
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


def throughput(backbone: str, size: int, batch: int, classes: int, steps: int, device: str) -> float:
    model = deeplabv3(classes, backbone).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch, size, size), device=device)
    use_amp = device == "cuda"

    def step():
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=use_amp):
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


def rendered(grammar, n: int, seed: int) -> SegmentationSet:
    r = render_all(grammar, n, seed)
    return SegmentationSet((r.images[:, 0].numpy() * 255 + 0.5).astype(np.uint8), r.masks.numpy(), DIGIT_CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2000, help="training scenes per dataset")
    parser.add_argument("--test", type=int, default=300, help="private test scenes")
    parser.add_argument("--iterations", type=int, default=None, help="override the digit_scenes preset")
    parser.add_argument("--r50-steps", type=int, default=2)
    args = parser.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} CPU threads")
    r50 = throughput("resnet50", 512, 8, 21, args.r50_steps, dev)
    print(f"DeepLabv3-ResNet50 512x512 batch 8 (train step{' fp16 autocast' if dev == 'cuda' else ''}): {r50:7.2f} images/s"
          f" -> 10,000 iterations take {10_000 * 8 / r50 / 3600:.1f} h")
    small = budget_from("digit_scenes", iterations=args.iterations)
    sm = throughput(small.backbone, small.crop_size, small.batch_size, small.num_classes, 20, dev)
    print(f"digit_scenes preset ({small.backbone} {small.crop_size}x{small.crop_size} batch {small.batch_size}): {sm:7.1f} images/s"
          f" -> {small.iterations} iterations take {small.iterations * small.batch_size / sm:.0f} s")
    target = load_grammar("digit_scenes_target")
    test = rendered(with_split(target, "heldout"), args.test, seed=12345)
    sources = {"prior grammar (digit_scenes)": load_grammar("digit_scenes"),
               "target grammar, train digits (upper bound)": with_split(target, "train")}
    for name, grammar in sources.items():
        data = rendered(grammar, args.n, seed=1)
        t0 = time.perf_counter()
        result = train_segmentation(data, small, device=dev, show_progress=False)
        scores = evaluate_segmentation(result.model, test, small.num_classes, dev)
        print(f"digit_scenes mIoU {scores['miou']:.3f} (pixel acc {scores['pixel_accuracy']:.3f}) from {name}, "
              f"{args.n} scenes, {result.iterations} it, {time.perf_counter() - t0:.0f} s, sha256 {result.checksum[:12]}")


if __name__ == "__main__":
    main()
