"""ASPP's dilated convolutions with and without the atrous shortcut (datarena.evaluate.deeplab.AtrousConv).

Times a training step (forward, both losses, backward, SGD) and an evaluation forward of the
DeepLabv3 of a preset, on random inputs of its crop size (training) and eval size (evaluation),
twice in the same run: with the shortcut (a rate no smaller than the feature map runs as the
1x1 conv of its centre weights) and as the baseline, every ASPP conv forced to the plain
dilated conv. Prints the median step time of each, their ratio, and the largest difference of
the two outputs (the same sum in another order).

Run: .venv/bin/python benchmarks/bench_atrous.py [--preset aerial_scenes] [--threads 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="aerial_scenes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from datarena.evaluate.deeplab import AtrousConv, deeplabv3
    from datarena.evaluate.train import budget_from

    torch.set_num_threads(a.threads)
    b = budget_from(a.preset)
    plain_forward, shortcut_forward = torch.nn.Conv2d.forward, AtrousConv.forward

    def run(shortcut: bool) -> tuple[float, float, torch.Tensor]:
        AtrousConv.forward = shortcut_forward if shortcut else plain_forward
        torch.manual_seed(0)
        model = deeplabv3(b.num_classes, b.backbone, aux_loss=True)
        opt = torch.optim.SGD(model.parameters(), lr=b.lr, momentum=b.momentum, weight_decay=b.weight_decay)
        x = torch.randn(b.batch_size, 3, b.crop_size, b.crop_size)
        y = torch.randint(0, b.num_classes, (b.batch_size, b.crop_size, b.crop_size))
        train = []
        for _ in range(a.steps + 3):
            t = time.perf_counter()
            out = model(x)
            loss = F.cross_entropy(out["out"], y) + b.aux_weight * F.cross_entropy(out["aux"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            train.append(time.perf_counter() - t)
        model.eval()
        size = b.eval_size or b.crop_size
        xe = torch.randn(1, 3, size, size)
        evals = []
        with torch.no_grad():
            for _ in range(a.steps + 3):
                t = time.perf_counter()
                pred = model(xe)["out"]
                evals.append(time.perf_counter() - t)
        return statistics.median(train[3:]), statistics.median(evals[3:]), pred

    try:
        base_t, base_e, base_pred = run(False)
        fast_t, fast_e, fast_pred = run(True)
    finally:
        AtrousConv.forward = shortcut_forward
    print(f"preset {a.preset}: {b.backbone}, batch {b.batch_size} x {b.crop_size} px (training), "
          f"{b.eval_size or b.crop_size} px (evaluation); {a.threads} thread(s), median of {a.steps} steps")
    print(f"{'':28}{'plain dilated':>15}{'shortcut':>12}{'ratio':>8}")
    print(f"{'training step (s)':28}{base_t:15.4f}{fast_t:12.4f}{base_t / fast_t:7.2f}x")
    print(f"{'evaluation forward (s)':28}{base_e:15.4f}{fast_e:12.4f}{base_e / fast_e:7.2f}x")
    print(f"largest output difference after {a.steps + 3} training steps: {(base_pred - fast_pred).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
