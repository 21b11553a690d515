"""Generate image + mask pairs with Stable Diffusion, masks from the model's own attention.

Image i uses the prompt and noise seed derived from (master seed, i) alone, and is generated on
its own (batch of one, two rows with classifier-free guidance), so `--shard k/n` on n machines
writes exactly the files one machine writes. Pairs land in the VOC layout as they finish (the mask
last, by atomic rename); `INCOMPLETE` marks a run in progress, and running the same command again
resumes it. `meta.json` is written when the run completes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

import datarena
from datarena.data.checksums import write_json
from datarena.data.segmentation import (
    VOC_CLASSES,
    DatasetRules,
    finish_voc,
    make_voc_dirs,
    validate_dataset,
    write_pair,
)
from datarena.errors import ConfigError, OutputExistsError
from datarena.progress import progress_bar

MARKER = "INCOMPLETE"
# a negative prompt of the kind Dataset Diffusion generates with (pass it with --negative-prompt)
NEGATIVE_PROMPT = "low quality, blurry, cropped, out of frame, deformed, disfigured, bad anatomy, watermark, text"


class DiffuseConfig(BaseModel):
    n: int = Field(100, ge=1, le=10_000, description="pairs in the whole dataset (the challenge allows 10,000)")
    seed: int = 0
    steps: int = Field(100, ge=1, description="denoising steps (Dataset Diffusion uses 100)")
    guidance: float = Field(7.5, ge=0)
    size: int = Field(512, ge=64)
    power: int = Field(4, ge=1, description="self-attention refinement power")
    foreground: float = Field(0.6, ge=0, le=1)
    uncertain: float = Field(0.5, ge=0, le=1)
    classes: list[int] = Field(default_factory=list, description="VOC class ids to draw from (default: all 20)")
    captions: str | None = None
    # Dataset Diffusion's class-prompt attention: mask maps from the conditional queries against the
    # class prompt encoded alone, softmax over its class tokens; False = the full prompt's tokens (ablation)
    class_prompt_attention: bool = True
    negative_prompt: str | None = None  # replaces the empty unconditional prompt (e.g. NEGATIVE_PROMPT)
    upsample: Literal["bicubic", "bilinear"] = "bicubic"
    shard_index: int = 0
    shard_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DiffuseConfig:
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard {self.shard_index}/{self.shard_count}: need 0 <= i < n")
        if self.uncertain > self.foreground:
            raise ValueError(f"uncertain threshold {self.uncertain} exceeds foreground threshold {self.foreground}")
        if self.size % 8:
            raise ValueError(f"size must be a multiple of 8, got {self.size}")
        if any(not 1 <= c <= 20 for c in self.classes):
            raise ValueError(f"classes must be VOC ids 1-20, got {self.classes}")
        return self

    def indices(self) -> range:
        return range(self.shard_index, self.n, self.shard_count)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (for example 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _run_identity(cfg: DiffuseConfig, model_hash: str) -> dict:
    return {"config": cfg.model_dump(), "model_sha256": model_hash}


def _prepare_out(out: Path, identity: dict, force: bool) -> set[int]:
    """Create or reopen the output directory; returns the indices already complete."""
    marker, run_file = out / MARKER, out / "run.json"
    if out.exists() and any(out.iterdir()):
        if marker.exists() and run_file.exists() and json.loads(run_file.read_text()) == identity:
            done = {int(p.stem) for p in (out / "SegmentationClass").glob("*.png") if p.stem.isdigit()}
            return done
        if not force:
            why = "holds a run with other settings" if marker.exists() else "is not empty"
            raise OutputExistsError(f"{out} {why}; pass --force to start over or choose another --out.")
        shutil.rmtree(out)
    make_voc_dirs(out)
    write_json(run_file, identity)
    marker.write_text("generation in progress; rerun the same command to resume\n")
    return set()


def generate_dataset(model_dir: str | Path, out: str | Path, cfg: DiffuseConfig, device: str = "cpu",
                     force: bool = False, show_progress: bool = True, stop_after: int | None = None,
                     capture: bool = True) -> dict:
    """Generate (or resume) this shard's pairs; returns a summary. `stop_after` simulates an interruption."""
    import torch

    from datarena.diffusion.attention import (
        AttentionStore,
        attention_masks,
        attention_resolutions,
        install_capture,
        pick_resolution,
        restore,
    )
    from datarena.diffusion.pipeline import check_model_dir, load_pipeline, model_dir_sha256
    from datarena.diffusion.prompts import (
        class_prompt_positions,
        class_token_spans,
        image_seed,
        prompt_for,
        read_captions,
    )

    out = Path(out)
    check_model_dir(model_dir)
    captions = read_captions(cfg.captions) if cfg.captions else None
    model_hash = model_dir_sha256(model_dir)
    identity = _run_identity(cfg, model_hash)
    done = _prepare_out(out, identity, force)
    pipe = load_pipeline(model_dir, device)
    unet, tokenizer, text_encoder = pipe.unet, pipe.tokenizer, pipe.text_encoder
    dtype = unet.dtype
    latent = cfg.size // pipe.vae_scale_factor
    cfg_guidance = cfg.guidance > 1.0
    # cross-attention at latent/4 and self-attention at latent/2 (16 and 32 for SD at 512), or the
    # nearest resolution the UNet has (recorded in meta.json)
    cross_av, self_av = attention_resolutions(unet, latent)
    cross_res, self_res = pick_resolution(latent // 4, cross_av), pick_resolution(latent // 2, self_av)
    attention_info = {"cross_res": cross_res, "self_res": self_res, "wanted": [latent // 4, latent // 2],
                      "available": sorted(cross_av), "class_prompt_attention": cfg.class_prompt_attention,
                      "upsample": cfg.upsample}
    if (cross_res, self_res) != (latent // 4, latent // 2):
        attention_info["note"] = (f"the UNet has no attention layer at {latent // 4} (cross) or {latent // 2} (self); "
                                  f"the nearest ones were used")
    todo = [i for i in cfg.indices() if i not in done]
    seconds = 0.0
    def encode(text: str):
        with torch.no_grad():
            return text_encoder(tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt").input_ids.to(device))[0]

    empty = encode(cfg.negative_prompt or "")
    with progress_bar(f"diffusing shard {cfg.shard_index}/{cfg.shard_count}", total=len(cfg.indices()), unit="img",
                      enabled=show_progress) as advance:
        advance(len(cfg.indices()) - len(todo))
        for count, i in enumerate(todo):
            if stop_after is not None and count >= stop_after:
                break
            t0 = time.perf_counter()
            prompt = prompt_for(i, cfg.seed, captions, cfg.classes or None)
            if cfg.class_prompt_attention:
                positions, spans = class_prompt_positions(tokenizer, prompt)
                store = AttentionStore(cross_res, self_res, cond_from=1 if cfg_guidance else 0,
                                       class_context=encode(prompt.class_prompt), class_positions=positions)
            else:
                spans = class_token_spans(tokenizer, prompt)
                store = AttentionStore(cross_res, self_res, cond_from=1 if cfg_guidance else 0)
            originals = install_capture(unet, store) if capture else None
            try:
                image, store = _denoise(pipe, prompt.text, empty, image_seed(i, cfg.seed), cfg, latent, dtype, device, store)
            finally:
                if originals is not None:
                    restore(unet, originals)
            if capture:
                mask = attention_masks(store.cross(), store.self_attention(), spans, list(prompt.classes), cfg.size,
                                       cfg.power, cfg.foreground, cfg.uncertain, cfg.upsample)[0].cpu().numpy()
            else:
                mask = np.zeros((cfg.size, cfg.size), np.uint8)
            write_pair(out, f"{i:06d}", image, mask)
            seconds += time.perf_counter() - t0
            advance(1)
    complete = {int(p.stem) for p in (out / "SegmentationClass").glob("*.png") if p.stem.isdigit()} >= set(cfg.indices())
    if complete:
        _finish(out, cfg, model_hash, pipe, captions, {**attention_info, **_environment(device, dtype)})
    return {"out": str(out), "complete": complete, "generated": len(todo) if stop_after is None else min(stop_after, len(todo)),
            "seconds": seconds}


def _denoise(pipe, text: str, empty, seed: int, cfg: DiffuseConfig, latent: int, dtype, device: str, store):
    import torch

    tokenizer, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    with torch.no_grad():
        ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        cond = text_encoder(ids)[0]
        context = torch.cat([empty, cond]) if cfg.guidance > 1.0 else cond
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn((1, unet.config.in_channels, latent, latent), generator=generator).to(device, dtype)
        scheduler.set_timesteps(cfg.steps, device=device)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if cfg.guidance > 1.0 else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise = unet(model_in, t, encoder_hidden_states=context.to(dtype)).sample
            if cfg.guidance > 1.0:
                uncond, text_noise = noise.chunk(2)
                noise = uncond + cfg.guidance * (text_noise - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    image = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return image, store


ENV_KEYS = ("torch", "diffusers", "datarena_version", "device", "dtype")


def _environment(device: str, dtype) -> dict:
    import diffusers
    import torch

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "datarena_version": datarena.__version__,
            "device": device, "dtype": str(dtype).replace("torch.", "")}


def _finish(out: Path, cfg: DiffuseConfig, model_hash: str, pipe, captions, extra: dict) -> None:
    from datarena.diffusion.prompts import image_seed, prompt_for

    names = [f"{i:06d}" for i in cfg.indices()]
    report = validate_dataset(out, DatasetRules(size=(cfg.size, cfg.size), num_classes=21, max_pairs=10_000))
    report.raise_for_problems()
    images = {}
    for i, name in zip(cfg.indices(), names, strict=True):
        p = prompt_for(i, cfg.seed, captions, cfg.classes or None)
        images[name] = {"seed": image_seed(i, cfg.seed), "prompt": p.text, "classes": [VOC_CLASSES[c] for c in p.classes]}
    finish_voc(out, names, VOC_CLASSES, {
        "generator": "datarena.diffusion (Dataset Diffusion masks)",
        "model_sha256": model_hash, "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": dict(pipe.scheduler.config), "steps": cfg.steps, "guidance": cfg.guidance,
        "size": cfg.size, "power": cfg.power, "thresholds": {"foreground": cfg.foreground, "uncertain": cfg.uncertain},
        "master_seed": cfg.seed, "n_total": cfg.n, "shard": f"{cfg.shard_index}/{cfg.shard_count}",
        "images": images, "class_prompt_attention": cfg.class_prompt_attention, "upsample": cfg.upsample,
        "negative_prompt": cfg.negative_prompt, "attention": {k: extra[k] for k in extra if k not in ENV_KEYS},
        **{k: extra[k] for k in ENV_KEYS},
    })
    (out / MARKER).unlink(missing_ok=True)


def merge_shards(shards: list[str | Path], out: str | Path, force: bool = False) -> Path:
    """Join complete shards of one run into the dataset (files and meta.json) the unsharded run writes."""
    from datarena.data.checksums import atomic_directory

    shards = [Path(p) for p in shards]
    metas = []
    for p in shards:
        if (p / MARKER).exists() or not (p / "meta.json").is_file():
            raise ConfigError(f"{p} is not a complete shard (no meta.json, or {MARKER} is present); finish it first.")
        metas.append(json.loads((p / "meta.json").read_text()))
    skip = ("shard", "images", "files", "n_pairs")
    first = {k: v for k, v in metas[0].items() if k not in skip}
    for p, m in zip(shards[1:], metas[1:], strict=True):
        other = {k: v for k, v in m.items() if k not in skip}
        if other != first:
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise ConfigError(f"{p} comes from another run than {shards[0]} (differs in {', '.join(diff)}).")
    counts = {int(m["shard"].split("/")[1]) for m in metas}
    if len(counts) != 1:
        raise ConfigError(f"the shards were made with different shard counts: {sorted(counts)}.")
    n_shards = counts.pop()
    got = sorted(int(m["shard"].split("/")[0]) for m in metas)
    if got != list(range(n_shards)):
        missing = sorted(set(range(n_shards)) - set(got))
        raise ConfigError(f"need every shard 0..{n_shards - 1} exactly once; missing {missing}, given {got}.")
    images = {}
    for m in metas:
        images.update(m["images"])
    names = sorted(images)
    with atomic_directory(out, force=force) as tmp:
        make_voc_dirs(tmp)
        for p, m in zip(shards, metas, strict=True):
            for name in m["images"]:
                for rel in (f"JPEGImages/{name}.jpg", f"SegmentationClass/{name}.png"):
                    shutil.copyfile(p / rel, tmp / rel)
        meta = {k: v for k, v in metas[0].items() if k not in ("format", "classes", "n_pairs", "files")}
        meta.update(shard="0/1", images={n: images[n] for n in names})
        finish_voc(tmp, names, VOC_CLASSES, meta)
        run = json.loads((shards[0] / "run.json").read_text())
        run["config"].update(shard_index=0, shard_count=1)
        write_json(tmp / "run.json", run)
    return Path(out)
