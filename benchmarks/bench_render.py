"""Digits per second of the batched renderer beside a per-image PIL rotate-and-paste loop.

Both produce the same ground truth per digit: the image, a class mask and a box. Goal (issue 5):
>= 50x the PIL loop at 32x32.  Run: .venv/bin/python benchmarks/bench_render.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image

from datarena.scenes.grammar import ATTRS, load_grammar, texture_bank
from datarena.scenes.render import render


def pil_loop(batch, bank, canvas: int) -> int:
    """Per digit: rotate + scale with PIL, paste at its position, read back image, mask and box."""
    textures = (bank.textures.numpy() * 255).astype(np.uint8)
    attrs = batch.attrs.numpy()
    tex = batch.texture.numpy()
    cls = batch.classes.numpy()
    for i in range(len(tex)):
        x, y, rot, scale, _ = (attrs[i, 0, ATTRS.index(a)] for a in ATTRS)
        digit = Image.fromarray(textures[tex[i, 0]])
        size = max(1, round(28 * scale))
        digit = digit.resize((size, size), Image.BILINEAR).rotate(float(rot), resample=Image.BILINEAR, expand=True)
        out = Image.new("L", (canvas, canvas))
        out.paste(digit, (round(x - digit.width / 2), round(y - digit.height / 2)), digit)
        image = np.asarray(out, dtype=np.float32) / 255.0
        mask = np.where(image >= 0.5, cls[i, 0] + 1, 0).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        _box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (-1, -1, -1, -1)
    return len(tex)


def timed(fn, repeats: int, sync=lambda: None) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16384, help="digits per renderer batch")
    parser.add_argument("--pil-n", type=int, default=3000, help="digits for the PIL loop")
    parser.add_argument("--device", default="cpu", help="where the renderer runs (the PIL loop always runs on one CPU core)")
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, renderer on {dev}, {torch.get_num_threads()} CPU threads, "
          f"DATARENA_COMPILE={os.environ.get('DATARENA_COMPILE', '1')}")
    for name in ("mnist", "bigmnist"):
        g = load_grammar(name)
        bank = texture_bank(g.object.split)
        cpu_batch = g.sample(args.n, seed=0)
        batch = cpu_batch.to(dev)
        with torch.no_grad():
            t0 = time.perf_counter()
            render(batch[:256], g, bank)  # compiles the kernel once
            sync()
            compile_s = time.perf_counter() - t0
            render(batch, g, bank)
            ours = args.n / timed(lambda b=batch, g=g, k=bank: render(b, g, k), 3, sync)
        small = cpu_batch[: args.pil_n]
        pil = args.pil_n / timed(lambda s=small, b=bank, c=g.canvas: pil_loop(s, b, c), 2)
        print(f"{name:9s} {g.canvas}x{g.canvas}: renderer {ours:10,.0f} digits/s (first call incl. compile {compile_s:.1f} s) | "
              f"PIL loop {pil:8,.0f} digits/s | ratio {ours / pil:5.1f}x (goal >= 50x at 32x32)")
    g = load_grammar("digit_scenes")
    batch = g.sample(4096, seed=0).to(dev)
    with torch.no_grad():
        render(batch, g)
        sps = 4096 / timed(lambda: render(batch, g), 3, sync)
    digits = float(batch.present.sum()) / 4096
    print(f"digit_scenes 64x64 (1-3 digits): {sps:,.0f} scenes/s = {sps * digits:,.0f} digits/s")
    batch = load_grammar("mnist").sample(4096, seed=0).to(dev)
    attrs = batch.attrs.clone().requires_grad_(True)
    g = load_grammar("mnist")
    render(batch.with_attrs(attrs), g).images.sum().backward()

    def fwd_bwd():
        a = batch.attrs.clone().requires_grad_(True)
        render(batch.with_attrs(a), g).images.sum().backward()

    print(f"forward+backward 32x32: {4096 / timed(fwd_bwd, 3, sync):,.0f} digits/s")


if __name__ == "__main__":
    main()
