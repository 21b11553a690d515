"""`datarena diffuse`: Stable Diffusion image + mask pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from datarena.cli.common import (
    _device,
    app,
    console,
)
from datarena.errors import DatarenaError

diffuse_app = typer.Typer(help="Generate image + mask pairs with Stable Diffusion; masks come from its own attention.")
app.add_typer(diffuse_app, name="diffuse")


@diffuse_app.command("merge")
def diffuse_merge(
    shards: list[Path] = typer.Argument(..., help="The shard directories of one run (every i of i/n once)."),
    out: Path = typer.Option(..., "--out", help="The merged dataset: the same files and meta.json as the unsharded run."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Join the shards of one `diffuse` run into one dataset."""
    from datarena.diffusion.generate import merge_shards

    path = merge_shards(shards, out, force=force)
    console.print(f"merged {len(shards)} shards into {path}")


@diffuse_app.callback(invoke_without_command=True)
def diffuse_cmd(
    ctx: typer.Context,
    model: Path = typer.Option(None, "--model", help="Local Stable Diffusion v1.x/v2.x diffusers directory (nothing is downloaded)."),
    out: Path = typer.Option(None, "--out", help="Output directory (VOC layout); rerun the same command to resume."),
    n: int = typer.Option(100, "--n", help="Pairs in the whole dataset (at most 10,000)."),
    seed: int = typer.Option(0, help="Master seed: per-image prompts and noise derive from it."),
    shard: str = typer.Option("0/1", help="i/n: this machine writes images i, i+n, i+2n, ..."),
    steps: int = typer.Option(100, help="Denoising steps (Dataset Diffusion: 100)."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    size: int = typer.Option(512, help="Image size (square)."),
    captions: Path = typer.Option(None, "--captions", help="Captions file: .txt (one per line) or .jsonl with caption/classes."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated VOC class names to draw from (default: all 20)."),
    power: int = typer.Option(4, help="Self-attention refinement power."),
    foreground: float = typer.Option(0.6, help="A pixel takes a class where its map is >= this."),
    uncertain: float = typer.Option(0.5, help="Maps in [uncertain, foreground) give 255 (ignored by training)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cuda (fp16) or cpu (fp32)."),
    force: bool = typer.Option(False, "--force", help="Discard an existing output directory."),
    negative_prompt: str = typer.Option(None, "--negative-prompt", help="Unconditional prompt; 'default' = datarena's NEGATIVE_PROMPT."),
    full_prompt_attention: bool = typer.Option(False, "--full-prompt-attention", help="Ablation: mask maps from the whole prompt's tokens, not the class prompt alone."),
    upsample: str = typer.Option("bicubic", "--upsample", help="Upsampling of the attention maps: bicubic (the method) or bilinear."),
) -> None:
    """Generate image + mask pairs with Stable Diffusion; masks come from its own attention."""
    device = _device(device)
    from datarena.data.segmentation import VOC_CLASSES
    from datarena.diffusion.generate import (
        NEGATIVE_PROMPT,
        DiffuseConfig,
        generate_dataset,
        parse_shard,
    )

    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        raise DatarenaError("pass --model SD_DIR and --out DIR (or `datarena diffuse merge SHARDS --out DIR`).")

    index, count = parse_shard(shard)
    ids = []
    for name in (classes.split(",") if classes else []):
        key = name.strip().lower().replace(" ", "")
        if key not in VOC_CLASSES[1:]:
            raise DatarenaError(f"unknown VOC class {name!r}; choose from {', '.join(VOC_CLASSES[1:])}.")
        ids.append(VOC_CLASSES.index(key))
    try:
        cfg = DiffuseConfig(n=n, seed=seed, steps=steps, guidance=guidance, size=size, power=power, foreground=foreground,
                            uncertain=uncertain, classes=ids, captions=str(captions) if captions else None,
                            shard_index=index, shard_count=count, class_prompt_attention=not full_prompt_attention,
                            negative_prompt=NEGATIVE_PROMPT if negative_prompt == "default" else negative_prompt,
                            upsample=upsample)
    except ValueError as exc:
        raise DatarenaError(f"invalid settings: {exc}") from None
    summary = generate_dataset(model, out, cfg, device=device, force=force)
    state = "complete, meta.json written" if summary["complete"] else "incomplete (rerun to resume)"
    console.print(f"{out}: {summary['generated']} pairs generated this run in {summary['seconds']:.1f} s; {state}")
