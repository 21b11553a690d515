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


class DiffuseConfig(BaseModel):
    n: int = Field(100, ge=1, le=10_000, description="pairs in the whole dataset (the challenge allows 10,000)")
    seed: int = 0
    steps: int = Field(50, ge=1)
    guidance: float = Field(7.5, ge=0)
    size: int = Field(512, ge=64)
    power: int = Field(4, ge=1, description="self-attention refinement power")
    foreground: float = Field(0.6, ge=0, le=1)
    uncertain: float = Field(0.5, ge=0, le=1)
    classes: list[int] = Field(default_factory=list, description="VOC class ids to draw from (default: all 20)")
    captions: str | None = None
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
        install_capture,
        restore,
    )
    from datarena.diffusion.pipeline import check_model_dir, load_pipeline, model_dir_sha256
    from datarena.diffusion.prompts import class_token_spans, image_seed, prompt_for, read_captions

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
    todo = [i for i in cfg.indices() if i not in done]
    seconds = 0.0
    with torch.no_grad():
        empty = text_encoder(tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                                       truncation=True, return_tensors="pt").input_ids.to(device))[0]
    with progress_bar(f"diffusing shard {cfg.shard_index}/{cfg.shard_count}", total=len(cfg.indices()), unit="img",
                      enabled=show_progress) as advance:
        advance(len(cfg.indices()) - len(todo))
        for count, i in enumerate(todo):
            if stop_after is not None and count >= stop_after:
                break
            t0 = time.perf_counter()
            prompt = prompt_for(i, cfg.seed, captions, cfg.classes or None)
            spans = class_token_spans(tokenizer, prompt)
            store = AttentionStore(latent // 4, latent // 2, cond_from=1 if cfg_guidance else 0)
            originals = install_capture(unet, store) if capture else None
            try:
                image, store = _denoise(pipe, prompt.text, empty, image_seed(i, cfg.seed), cfg, latent, dtype, device, store)
            finally:
                if originals is not None:
                    restore(unet, originals)
            if capture:
                mask = attention_masks(store.cross(), store.self_attention(), spans, list(prompt.classes), cfg.size,
                                       cfg.power, cfg.foreground, cfg.uncertain)[0].cpu().numpy()
            else:
                mask = np.zeros((cfg.size, cfg.size), np.uint8)
            write_pair(out, f"{i:06d}", image, mask)
            seconds += time.perf_counter() - t0
            advance(1)
    complete = {int(p.stem) for p in (out / "SegmentationClass").glob("*.png") if p.stem.isdigit()} >= set(cfg.indices())
    if complete:
        _finish(out, cfg, model_hash, pipe, captions)
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


def _finish(out: Path, cfg: DiffuseConfig, model_hash: str, pipe, captions) -> None:
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
        "images": images, "datarena_version": datarena.__version__,
    })
    (out / MARKER).unlink(missing_ok=True)
