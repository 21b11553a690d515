"""Batched, differentiable scene renderer with ground truth (class, per-pixel mask, box).

Each object is a real MNIST digit warped by an affine map built from its continuous
attributes (centre x/y, rotation, scale) and sampled bilinearly; objects are composited front
to back in order ("over"), so the image is differentiable with respect to every continuous
attribute and to the intensities. The sampler is plain tensor code compiled once by
`torch.compile` into a fused kernel (on 2 CPU cores 3.5x `grid_sample` and 12x the same code
run eagerly; see docs/benchmarks.md); set `DATARENA_COMPILE=0` to run it eagerly.

Masks hold 0 for background and `digit + 1` for a digit (11 classes); pixels whose digit
coverage falls inside the grammar's `ignore_band` are 255. Boxes are (x0, y0, x1, y1) in pixels
around each object's own footprint (alpha > 0.5), -1 for absent objects.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from datarena.scenes.grammar import (
    ATTRS,
    DIGIT_SIZE,
    SceneBatch,
    SceneGrammar,
    TextureBank,
    texture_bank,
)

_IX, _IY, _IROT, _ISCALE, _IINT = (ATTRS.index(a) for a in ("x", "y", "rotation", "scale", "intensity"))


@dataclass
class Rendered:
    images: torch.Tensor  # (N, 1, H, W) float in [0, 1] (differentiable)
    masks: torch.Tensor  # (N, H, W) uint8: 0 background, digit+1, 255 ignore
    classes: torch.Tensor  # (N, K) long, -1 absent
    boxes: torch.Tensor  # (N, K, 4) float x0, y0, x1, y1; -1 absent

    @property
    def labels(self) -> torch.Tensor:
        """Class of the first object of each scene (classification datasets)."""
        return self.classes[:, 0]


def affine_params(attrs: torch.Tensor, size: int = DIGIT_SIZE) -> torch.Tensor:
    """(..., 6) coefficients mapping canvas pixel centres to texture coordinates.

    A canvas point at offset d from the object's centre samples the texture at
    S/2 + R(theta)^T-style inverse rotation of d / scale, so positive angles turn the digit
    counter-clockwise on screen (as PIL's Image.rotate does).
    """
    cx, cy = attrs[..., _IX], attrs[..., _IY]
    theta = attrs[..., _IROT] * (math.pi / 180.0)
    inv = 1.0 / attrs[..., _ISCALE].clamp_min(1e-3)
    c, s = torch.cos(theta) * inv, torch.sin(theta) * inv
    half = size / 2.0
    return torch.stack([c, -s, half - (c * cx - s * cy), s, c, half - (s * cx + c * cy)], dim=-1)


def _render_core(pbank, tex, coef, classes, intensity, background, lo: float, hi: float, height: int, width: int):
    """Sample every object's alpha, composite, and label each pixel with its front object.

    pbank: (T, S+3, S+3) textures padded with zeros (1 before, 2 after);
    tex, classes (-1 = absent), intensity: (N, K); coef: (N, K, 6); background: (N,).
    """
    present = (classes >= 0).to(coef.dtype)
    n, k = tex.shape
    size = pbank.shape[-1] - 3
    span = pbank.shape[-1]
    ys = (torch.arange(height, dtype=coef.dtype, device=coef.device) + 0.5).view(1, 1, height, 1)
    xs = (torch.arange(width, dtype=coef.dtype, device=coef.device) + 0.5).view(1, 1, 1, width)
    a = coef.view(n, k, 6, 1, 1)
    # texture coordinates of each canvas pixel, in the padded bank's index space
    u = (a[:, :, 0] * xs + a[:, :, 1] * ys + a[:, :, 2] - 0.5).clamp(-1.0, float(size)) + 1.0
    v = (a[:, :, 3] * xs + a[:, :, 4] * ys + a[:, :, 5] - 0.5).clamp(-1.0, float(size)) + 1.0
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    flat = pbank.reshape(-1)
    j = tex.view(n, k, 1, 1) * (span * span) + v0.long() * span + u0.long()
    t00, t01, t10, t11 = flat[j], flat[j + 1], flat[j + span], flat[j + span + 1]
    top = t00 + (t01 - t00) * fu
    bottom = t10 + (t11 - t10) * fu
    alpha = (top + (bottom - top) * fv) * present.view(n, k, 1, 1)
    image = background.view(n, 1, 1).expand(n, height, width)
    for i in range(k):
        image = image + (intensity[:, i].view(n, 1, 1) - image) * alpha[:, i]
    # visible share of each object (front = last), for masks
    rest = torch.ones_like(image)
    visible = []
    for i in range(k - 1, -1, -1):
        visible.append(alpha[:, i] * rest)
        rest = rest * (1.0 - alpha[:, i])
    visible = torch.stack(visible[::-1], dim=1)
    front = visible.argmax(dim=1, keepdim=True)
    digit = torch.gather(classes.view(n, k, 1, 1).expand(n, k, height, width), 1, front)[:, 0] + 1
    coverage = 1.0 - rest
    mask = torch.where(coverage >= hi, digit, 0)
    mask = torch.where((coverage >= lo) & (coverage < hi), 255, mask)
    return image, mask.to(torch.uint8), _boxes(alpha, classes >= 0)


_compiled = None
EAGER_BELOW = 64  # scenes per batch under which a no-gradient render skips the compile


def _core():
    global _compiled
    if os.environ.get("DATARENA_COMPILE", "1") == "0":
        return _render_core
    if _compiled is None:
        _compiled = torch.compile(_render_core, dynamic=True)
    return _compiled


def padded_bank(bank: TextureBank, device: torch.device | str = "cpu") -> torch.Tensor:
    """The bank's textures padded for the sampler, cached once per device."""
    cache = getattr(bank, "_padded", None)
    if cache is None:
        cache = {}
        object.__setattr__(bank, "_padded", cache)
    key = str(torch.device(device))
    if key not in cache:
        cache[key] = F.pad(bank.textures, (1, 2, 1, 2)).to(device)
    return cache[key]


def _boxes(alpha: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    on = alpha.detach() > 0.5
    rows, cols = on.any(dim=3), on.any(dim=2)  # (N, K, H), (N, K, W)

    def span(line: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = line.shape[-1]
        idx = torch.arange(length, device=line.device)
        first = torch.where(line, idx, length).amin(dim=-1)
        last = torch.where(line, idx, -1).amax(dim=-1) + 1
        return first, last

    y0, y1 = span(rows)
    x0, x1 = span(cols)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    empty = ~(present & rows.any(dim=-1))
    return torch.where(empty.unsqueeze(-1), torch.full_like(boxes, -1.0), boxes)


def render(
    batch: SceneBatch,
    grammar: SceneGrammar,
    bank: TextureBank | None = None,
    mnist_dir: str | None = None,
) -> Rendered:
    """Render a batch sampled from `grammar` (attributes may carry gradients).

    It runs where `batch.attrs` lives: move the batch with `batch.to("cuda")` to render on a GPU.
    """
    bank = bank or texture_bank(grammar.object.split, mnist_dir)
    size = grammar.canvas
    attrs = batch.attrs.float()
    dev = attrs.device
    coef = affine_params(attrs, bank.textures.shape[-1])
    lo, hi = grammar.ignore_band or (grammar.mask_threshold, grammar.mask_threshold)
    # compiling costs seconds once per process: a few scenes rendered without gradients (a small
    # `scenes render`, a test) run eagerly unless the kernel is compiled already (same pixels either way)
    eager = len(batch) < EAGER_BELOW and not attrs.requires_grad and _compiled is None
    image, masks, boxes = (_render_core if eager else _safe_core())(
        padded_bank(bank, dev), batch.texture.to(dev), coef, batch.classes.to(dev), attrs[..., _IINT],
        batch.background.float().to(dev), float(lo), float(hi), size, size,
    )
    if bool((batch.noise > 0).any()):
        image = image + _noise(batch, size).to(dev)
    image = image.clamp(0.0, 1.0)
    return Rendered(images=image.unsqueeze(1), masks=masks, classes=batch.classes.to(dev), boxes=boxes)


def _safe_core():
    core = _core()
    if core is _render_core:
        return core

    def call(*args):
        global _compiled
        try:
            return core(*args)
        except Exception as exc:  # noqa: BLE001 - a missing compiler must not stop rendering
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); rendering eagerly", stacklevel=3)
            _compiled = _render_core
            return _render_core(*args)

    return call


def _noise(batch: SceneBatch, size: int) -> torch.Tensor:
    out = np.empty((len(batch), size, size), dtype=np.float32)
    for i, (seed, std) in enumerate(zip(batch.noise_seed.tolist(), batch.noise.tolist(), strict=True)):
        out[i] = np.random.default_rng(seed).normal(0.0, std, size=(size, size)) if std > 0 else 0.0
    return torch.from_numpy(out)


def render_grammar(grammar: SceneGrammar, n: int, seed: int, start: int = 0, batch_size: int = 1024,
                   mnist_dir: str | None = None, transform=None):
    """Yield (first index, Rendered) batches for scenes start .. start+n-1, without gradients.

    `transform` (a SceneBatch -> SceneBatch callable, e.g. a learned Meta-Sim generator) rewrites
    each sampled batch before rendering.
    """
    bank = texture_bank(grammar.object.split, mnist_dir)
    with torch.no_grad():
        for first in range(start, start + n, batch_size):
            m = min(batch_size, start + n - first)
            batch = grammar.sample(m, seed, start=first, mnist_dir=mnist_dir)
            yield first, render(transform(batch) if transform else batch, grammar, bank)


def render_all(grammar: SceneGrammar, n: int, seed: int, transform=None, batch_size: int = 2048,
               mnist_dir: str | None = None) -> Rendered:
    """Scenes 0 .. n-1 of a grammar rendered (without gradients) into one `Rendered`."""
    parts = [r for _, r in render_grammar(grammar, n, seed, batch_size=batch_size, mnist_dir=mnist_dir, transform=transform)]
    return Rendered(*(torch.cat([getattr(r, f) for r in parts]) for f in ("images", "masks", "classes", "boxes")))
