"""The functions behind the built-in job kinds: thin adapters from a payload to a lower layer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from datarena.errors import ConfigError
from datarena.jobs.runner import JobContext


def _require(payload: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in payload]
    if missing:
        raise ConfigError(f"the job's payload lacks {', '.join(missing)}.")


def score_dataset_job(payload: dict, ctx: JobContext) -> dict:
    """payload: dataset, test, out, preset (default digit_scenes), overrides {}, device, validate.

    A re-run after a lost worker resumes from OUT/checkpoint.pt (same budget), so no work is lost.
    """
    from datarena.evaluate.train import budget_from, score_dataset

    _require(payload, "dataset", "test", "out")
    budget = budget_from(payload.get("preset", "digit_scenes"), **payload.get("overrides", {}))
    out = Path(payload["out"])
    resume = (out / "checkpoint.pt").is_file()
    ctx.log(f"scoring {payload['dataset']} with {budget.backbone}, {budget.iterations} it"
            f"{' (resuming)' if resume else ''}")
    report = score_dataset(payload["dataset"], payload["test"], budget, out, resume=resume,
                           backbone_weights=payload.get("backbone_weights"), device=payload.get("device", "cpu"),
                           validate=payload.get("validate", "strict"), show_progress=False,
                           on_progress=lambda step, total, stats: ctx.progress(
                               step, total, f"iteration {step}/{total} loss {stats['loss']:.3f}", rate=stats["img_s"]))
    keep = ("miou", "pixel_accuracy", "per_class_iou", "model_sha256", "iterations", "train_seconds",
            "train_images_per_second", "n_pairs", "n_test_images", "backbone_sha256")
    return {**{k: report[k] for k in keep},
            "artefacts": {"report": str(out / "report.json"), "model": str(out / "model.pt"),
                          "overlays": str(out / "overlays.png")}}


def render_scenes_job(payload: dict, ctx: JobContext) -> dict:
    """payload: grammar, n, out, seed (0), format (voc), mnist_dir."""
    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.writers import write_scenes

    _require(payload, "grammar", "n", "out")
    ctx.progress(0, 1, f"rendering {payload['n']} scenes of {payload['grammar']}")
    path = write_scenes(load_grammar(payload["grammar"]), int(payload["n"]), int(payload.get("seed", 0)),
                        payload["out"], fmt=payload.get("format", "voc"), force=True,
                        mnist_dir=payload.get("mnist_dir"))
    ctx.progress(1, 1, "written")
    return {"out": str(path), "n": int(payload["n"]), "artefacts": {"preview": str(Path(path) / "preview.png")}}


def diffuse_shard_job(payload: dict, ctx: JobContext) -> dict:
    """payload: model, out, n, shard ("i/n"), device (cuda), and any DiffuseConfig field."""
    from datarena.diffusion.generate import DiffuseConfig, generate_dataset, parse_shard

    _require(payload, "model", "out", "n")
    fields = {k: v for k, v in payload.items() if k in DiffuseConfig.model_fields}
    if "shard" in payload:
        fields["shard_index"], fields["shard_count"] = parse_shard(payload["shard"])
    cfg = DiffuseConfig(**fields)
    ctx.progress(0, int(payload["n"]), "generating")
    generate_dataset(payload["model"], payload["out"], cfg, device=payload.get("device", "cuda"))
    return {"out": str(payload["out"])}


def sleep_job(payload: dict, ctx: JobContext) -> dict:
    """payload: seconds, fail (a message to raise), marker (a file that gets one line per run)."""
    if payload.get("marker"):
        with open(payload["marker"], "a") as fh:
            fh.write(f"{ctx.job_id} {os.getpid()}\n")
    seconds = float(payload.get("seconds", 0))
    steps = max(1, int(seconds / 0.05))
    t0 = time.perf_counter()
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(i + 1, steps, f"slept {time.perf_counter() - t0:.1f} of {seconds:g} s")
    if payload.get("fail"):
        raise RuntimeError(str(payload["fail"]))
    return {"slept_s": seconds, "pid": os.getpid()}


def noop_job(payload: dict, ctx: JobContext) -> dict:
    return {"echo": payload}
