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
                           overlays_from=payload.get("overlays_from", "test"),
                           on_progress=lambda step, total, stats: ctx.progress(
                               step, total, f"iteration {step}/{total} loss {stats['loss']:.3f}", rate=stats["img_s"]))
    keep = ("miou", "miou_low", "miou_high", "seeds", "seed_mious", "seed_spread_included", "std_test_images",
            "std_seeds", "pixel_accuracy", "per_class_iou", "model_sha256", "model_sha256_seeds", "iterations",
            "train_seconds", "train_images_per_second", "n_pairs", "n_test_images", "backbone_sha256", "device",
            "torch", "datarena_version", "cpu_threads")
    artefacts = {"report": str(out / "report.json"), "model": str(out / "model.pt"),
                 "overlays": str(out / "overlays.png")}
    if payload.get("public_indices") is not None:  # a split test set: only the public part in the result
        report = split_report(report, out, payload["public_indices"])
        artefacts["private"] = str(out / "private.json")
    return {**{k: report[k] for k in keep if k in report}, "test_part": report.get("test_part", "whole"),
            "artefacts": artefacts}


def split_report(report: dict, out: Path, public_indices: list[int]) -> dict:
    """Rescore on the public images only; the private part's score goes to OUT/private.json, which
    nothing a team can reach serves while the phase is open."""
    import json

    import numpy as np

    from datarena.evaluate.uncertainty import part_scores

    with np.load(out / "confusions.npz") as z:
        stacks = [z[f"seed{k}"] for k in range(len(z.files))]
    n = len(stacks[0])
    public = np.zeros(n, dtype=bool)
    public[[i for i in public_indices if 0 <= i < n]] = True
    names = list(report["per_class_iou"])
    pub, priv = part_scores(stacks, np.flatnonzero(public), names), part_scores(stacks, np.flatnonzero(~public), names)
    (out / "private.json").write_text(json.dumps(priv, indent=2))
    return {**report, **pub, "test_part": "public"}


def verify_dataset_job(payload: dict, ctx: JobContext) -> dict:
    """Re-run a submission's scoring and compare it with the recorded result (organisers' check).

    payload: as score_dataset, plus `reference` (the recorded result: model_sha256, miou,
    device, torch, datarena_version, cpu_threads) and `tolerance` (mIoU; None: what the recorded score's own
    noise implies, `evaluate.uncertainty.rerun_tolerance`). Rule: on the same device and
    versions (and CPU thread count) the model checksum must be identical; otherwise the mIoU must lie within the
    tolerance. A dataset whose meta.json says datarena rendered it (`scenes render`) is also
    regenerated from its recorded grammar and seed, and every file hash compared.
    """
    from datarena.evaluate.verify import compare_rerun, regenerate_check

    ref = payload["reference"]
    regen = regenerate_check(Path(payload["dataset"]), ctx.log)
    rerun = score_dataset_job(payload, ctx)
    verdict = compare_rerun(rerun, ref, payload.get("tolerance"))
    ok, why = verdict["ok"], verdict["reason"]
    if regen["status"] == "mismatch":
        ok, why = False, f"{why}; regenerated dataset differs: {regen['detail']}"
    return {"status": "pass" if ok else "fail", "rule": verdict["rule"], "reason": why, "regeneration": regen,
            "miou": rerun["miou"], "model_sha256": rerun["model_sha256"]}


def render_scenes_job(payload: dict, ctx: JobContext) -> dict:
    """payload: grammar (any kind), n, out, seed (0), format (voc; npy for the digit grammars), mnist_dir."""
    from datarena.scenes.writers import write_dataset, write_scenes

    _require(payload, "grammar", "n", "out")
    ctx.progress(0, 1, f"rendering {payload['n']} scenes of {payload['grammar']}")
    n, seed, fmt = int(payload["n"]), int(payload.get("seed", 0)), payload.get("format", "voc")
    if fmt == "voc":
        path = write_dataset(payload["grammar"], n, seed, payload["out"], force=True, show_progress=False,
                             mnist_dir=payload.get("mnist_dir"))
    else:
        from datarena.scenes.grammar import load_grammar

        path = write_scenes(load_grammar(payload["grammar"]), n, seed, payload["out"], fmt=fmt, force=True,
                            mnist_dir=payload.get("mnist_dir"))
    ctx.progress(1, 1, "written")
    preview = Path(path) / "preview.png"
    return {"out": str(path), "n": n, "artefacts": {"preview": str(preview)} if preview.is_file() else {}}


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
