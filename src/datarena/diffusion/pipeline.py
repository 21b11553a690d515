"""Load a Stable Diffusion pipeline from a local directory (nothing is downloaded), hash it,
and build a random-weight pipeline of the same architecture for tests and benchmarks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from datarena.errors import SourceNotFoundError
from datarena.seeding import seeded_by

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def check_model_dir(model_dir: str | Path) -> Path:
    """Raise a clear error unless `model_dir` is a complete diffusers Stable Diffusion directory."""
    path = Path(model_dir)
    hint = ("Point --model at a local diffusers directory of Stable Diffusion v1.x/v2.x (for example a copy of "
            "stable-diffusion-v1-5 or stable-diffusion-2-1-base saved with save_pretrained); nothing is downloaded.")
    if not path.is_dir():
        raise SourceNotFoundError(f"model directory {path} does not exist. {hint}")
    problems = []
    if not (path / "model_index.json").is_file():
        problems.append("model_index.json")
    for part in PARTS:
        sub = path / part
        if not sub.is_dir():
            problems.append(f"{part}/")
            continue
        if part == "tokenizer":
            if not any((sub / f).is_file() for f in ("vocab.json", "tokenizer.json")):
                problems.append("tokenizer/vocab.json")
        elif part == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                problems.append("scheduler/scheduler_config.json")
        else:
            if not (sub / "config.json").is_file():
                problems.append(f"{part}/config.json")
            if not any(p.suffix in (".safetensors", ".bin") for p in sub.iterdir()):
                problems.append(f"{part}/ weights (*.safetensors or *.bin)")
    if problems:
        raise SourceNotFoundError(f"model directory {path} is incomplete: missing {', '.join(problems)}. {hint}")
    return path


def model_dir_sha256(model_dir: str | Path) -> str:
    """sha256 over every file's relative path and bytes (sorted), identifying the exact weights."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def load_pipeline(model_dir: str | Path, device: str = "cpu", fp16: bool | None = None):
    """The diffusers StableDiffusionPipeline from a local directory: fp16 on a GPU, fp32 on a CPU."""
    path = check_model_dir(model_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from diffusers import StableDiffusionPipeline

    fp16 = device.startswith("cuda") if fp16 is None else fp16
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float16 if fp16 else torch.float32,
            safety_checker=None, requires_safety_checker=False, low_cpu_mem_usage=False,
        )
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise SourceNotFoundError(f"cannot load a Stable Diffusion pipeline from {path}: {exc}") from None
    pipe.set_progress_bar_config(disable=True)
    limit = pipe.text_encoder.config.max_position_embeddings
    if not 0 < pipe.tokenizer.model_max_length <= limit:
        pipe.tokenizer.model_max_length = limit
    return pipe.to(device)


def _tiny_tokenizer_files(folder: Path, words: list[str]) -> None:
    """A byte-pair CLIP tokenizer vocabulary in which every given word is one token."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789;,.-'")
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for tok in ("<|startoftext|>", "<|endoftext|>"):
        add(tok)
    for ch in letters:
        add(ch)
        add(ch + "</w>")
    merges: list[str] = []
    for word in sorted(set(words)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merges.append(f"{left} {right}")
            left = left + right
            add(left)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


@seeded_by(lambda a: a.arguments["seed"])
def build_random_pipeline(out: str | Path, image_size: int = 64, width: int = 32, seed: int = 0,
                          layout: str = "small") -> Path:
    """Save a Stable Diffusion pipeline with random weights.

    layout "small": SD's structure at a small size. The VAE downsamples 8x, the UNet has three
    levels, so cross-attention exists at latent/4 and self-attention at latent/2, as in SD at
    512x512 (16x16 and 32x32). layout "sd15": Stable Diffusion v1.5's exact sizes (UNet
    320/640/1280/1280, 8 heads, cross-attention 768; CLIP ViT-L/14 text encoder; VAE
    128/256/512/512), so speed and memory on a GPU are those of the real model; `width` is ignored.
    layout "shallow": attention only at the latent's full resolution (no layer at latent/4 or
    latent/2), to show masks drawn from the nearest layers a UNet has.
    The tokenizer knows the words of datarena's prompt templates as single tokens.
    """
    if layout not in ("small", "sd15", "shallow"):
        raise ValueError(f"unknown layout {layout!r}; choose small, sd15 or shallow.")
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from datarena.diffusion.prompts import CLASS_WORDS, PAIR, PLACES, SINGLE

    out = Path(out)  # the random weights come from the global RNG, seeded by @seeded_by
    words = []
    for text in (*SINGLE, *PAIR, *PLACES, *CLASS_WORDS.values()):
        words += [w for w in text.replace("{a}", "").replace("{b}", "").replace("{place}", "").replace("-", " ").split() if w.isalpha()]
    tok_dir = out / "_tokenizer_src"
    _tiny_tokenizer_files(tok_dir, words)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    sd15 = layout == "sd15"
    text_width = 768 if sd15 else width
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width if sd15 else 2 * width,
        num_attention_heads=12 if sd15 else 4, num_hidden_layers=12 if sd15 else 2, hidden_act="quick_gelu",
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2 if sd15 else 1,
        norm_num_groups=32 if sd15 else 8, block_out_channels=(128, 256, 512, 512) if sd15 else (8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=image_size,
    )
    if sd15:
        unet = UNet2DConditionModel(
            sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, cross_attention_dim=768,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8,
        )
    elif layout == "shallow":
        unet = UNet2DConditionModel(
            sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(width, 2 * width, 2 * width), norm_num_groups=8, cross_attention_dim=width,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"), mid_block_type=None,
            up_block_types=("UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
        )
    else:
        unet = UNet2DConditionModel(
            sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(width, 2 * width, 2 * width), norm_num_groups=8, cross_attention_dim=width,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
        )
    with torch.no_grad():  # sharper attention than a fresh initialisation, so maps have structure
        for module in unet.modules():
            if hasattr(module, "to_q") and hasattr(module, "to_k"):
                module.to_q.weight.mul_(4.0)
                module.to_k.weight.mul_(4.0)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(out))
    for p in tok_dir.iterdir():
        p.unlink()
    tok_dir.rmdir()
    return out
