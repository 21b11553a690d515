"""Cost of attention capture: seconds per image and peak memory with and without it, same run.

Without --model it builds a random-weight pipeline with Stable Diffusion's layout at 512x512
(VAE /8, cross-attention captured at 16x16 and self-attention at 32x32, 8 heads, as in SD) but
narrower layers (SD: 320/640/1280), so it runs on a CPU; the narrower the layers, the larger
the capture's share, so this overstates the overhead for real SD; with --model DIR it measures a real local SD directory.
Goal (issue 7): capture costs under 20 % extra time. Each variant runs in its own process, best of
two, interleaved: no capture, capture with class-prompt attention (the default), capture with the
full prompt's attention (the ablation).
Run: .venv/bin/python benchmarks/bench_diffusion.py [--model DIR --device cuda --steps 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args) -> None:
    import torch

    from datarena.diffusion.generate import DiffuseConfig, generate_dataset

    cfg = DiffuseConfig(n=args.n + 1, steps=args.steps, size=args.size, seed=3,
                        class_prompt_attention=args.capture != "full")
    with tempfile.TemporaryDirectory() as tmp:
        # image 0 warms up (first-call allocations), the next n are timed
        generate_dataset(args.model, Path(tmp) / "warm", cfg.model_copy(update={"n": 1}), device=args.device,
                         show_progress=False, capture=args.capture != "off")
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        summary = generate_dataset(args.model, Path(tmp) / "run", cfg.model_copy(update={"n": args.n}), device=args.device,
                                   show_progress=False, capture=args.capture != "off")
        wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"per_image_s": summary["seconds"] / args.n, "wall_s": wall, "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=int, default=128, help="channels of the random pipeline's first UNet level")
    parser.add_argument("--layout", choices=["small", "sd15"], default="small",
                        help="random pipeline: narrow SD structure (CPU) or Stable Diffusion v1.5's exact sizes (GPU)")
    parser.add_argument("--capture", choices=["class", "full", "off"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture:
        child(args)
        return
    tmp = None
    if args.model is None:
        from datarena.diffusion.pipeline import build_random_pipeline

        tmp = tempfile.TemporaryDirectory()
        args.model = str(build_random_pipeline(Path(tmp.name) / "sd-layout", image_size=args.size, width=args.width,
                                               layout=args.layout))
        widths = "320/640/1280/1280 (SD v1.5)" if args.layout == "sd15" else f"{args.width}/{2 * args.width}/{2 * args.width}"
        print(f"random-weight SD-layout pipeline at {args.size}x{args.size} (UNet widths {widths}, "
              f"8 heads), {args.steps} steps, device {args.device}")
    else:
        print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, device {args.device}")
    results = {}
    for mode in ("off", "class", "full") * 2:  # interleaved, best of two each
        cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--n", str(args.n),
               "--steps", str(args.steps), "--size", str(args.size), "--capture", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"capture={mode} run failed:\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        best = results.get(mode)
        if best is None or out["per_image_s"] < best["per_image_s"]:
            results[mode] = out
    off = results["off"]
    print(f"without capture: {off['per_image_s']:.3f} s/image, peak {off['peak_mib']:.0f} MiB")
    for mode, what in (("class", "class-prompt attention (default)"), ("full", "full-prompt attention (ablation)")):
        on = results[mode]
        print(f"with capture, {what}: {on['per_image_s']:.3f} s/image, peak {on['peak_mib']:.0f} MiB (masks included); "
              f"overhead {100 * (on['per_image_s'] / off['per_image_s'] - 1):+.1f} % time (goal < 20 %), "
              f"{on['peak_mib'] - off['peak_mib']:+.0f} MiB peak")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
