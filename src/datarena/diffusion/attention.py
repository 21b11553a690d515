"""Attention capture during denoising, and masks from the captured maps (Dataset Diffusion).

`install_capture(unet, store)` wraps every attention processor of a diffusers UNet: the output is
always the default processor's, and at two resolutions the wrapper also computes the softmax of
the conditional rows and adds it to running sums:

* cross-attention at `store.cross_res` (16x16 for a 512x512 image), conditional branch only;
* self-attention at `store.self_res` (32x32 for 512x512), conditional branch only.

Sums and counts (not lists of maps) are kept, so memory does not grow with the number of steps
or layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class AttentionStore:
    """Running means of cross- (HWc x tokens) and self-attention (HWs x HWs) maps per image.

    With `class_context` (the class prompt encoded alone, (1, T, D)) and `class_positions` (its
    class tokens), cross-attention for the masks pairs the conditional queries with the class
    prompt's keys at those positions only, so the softmax runs over class tokens only (Dataset
    Diffusion's class-prompt attention); the image itself still attends to the full prompt.
    """

    def __init__(self, cross_res: int, self_res: int, cond_from: int, class_context=None,
                 class_positions: list[int] | None = None):
        self.cross_res, self.self_res = cross_res, self_res
        self.cond_from = cond_from  # batch rows >= cond_from are the conditional branch
        self.class_context = class_context
        self.class_positions = class_positions
        self.cross_sum: torch.Tensor | None = None
        self.self_sum: torch.Tensor | None = None
        self.cross_count = 0
        self.self_count = 0

    def add(self, probs: torch.Tensor, batch: int, heads: int, is_cross: bool) -> None:
        """probs: (batch * heads, queries, keys) of the conditional rows."""
        maps = probs.view(batch, heads, *probs.shape[1:]).float().mean(1)
        if is_cross:
            self.cross_sum = maps if self.cross_sum is None else self.cross_sum + maps
            self.cross_count += 1
        else:
            self.self_sum = maps if self.self_sum is None else self.self_sum + maps
            self.self_count += 1

    def cross(self) -> torch.Tensor:
        if self.cross_sum is None:
            raise RuntimeError(f"no cross-attention was captured at {self.cross_res}x{self.cross_res}; "
                               "the UNet has no cross-attention layer at that resolution.")
        return self.cross_sum / self.cross_count

    def self_attention(self) -> torch.Tensor:
        if self.self_sum is None:
            raise RuntimeError(f"no self-attention was captured at {self.self_res}x{self.self_res}.")
        return self.self_sum / self.self_count


class CaptureProcessor:
    """A diffusers attention processor: the default computation, plus capture at the chosen sizes."""

    def __init__(self, store: AttentionStore, fallback):
        self.store = store
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        is_cross = encoder_hidden_states is not None
        seq = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[-1] * hidden_states.shape[-2]
        want = self.store.cross_res**2 if is_cross else self.store.self_res**2
        if hidden_states.ndim != 3 or seq != want or attn.spatial_norm is not None or attn.group_norm is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        # the layer's output comes from the default (fused) processor, so capture never changes the image;
        # the probabilities are computed again for the conditional rows only
        out = self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        rows = slice(self.store.cond_from, None)
        class_only = is_cross and self.store.class_context is not None
        if class_only:  # the class prompt's own encoding, its class tokens only
            n = hidden_states[rows].shape[0]
            context = self.store.class_context.to(hidden_states.dtype).expand(n, -1, -1)
        else:
            context = encoder_hidden_states[rows] if is_cross else hidden_states[rows]
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if class_only:
            context = context[:, self.store.class_positions]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states[rows]))
        key = attn.head_to_batch_dim(attn.to_k(context))
        mask = None
        if attention_mask is not None and not class_only:
            mask = attn.prepare_attention_mask(attention_mask[rows], context.shape[1], query.shape[0] // attn.heads)
        self.store.add(attn.get_attention_scores(query, key, mask), query.shape[0] // attn.heads, attn.heads, is_cross)
        return out


def install_capture(unet, store: AttentionStore) -> dict:
    """Wrap every attention processor of `unet`; returns the originals for `restore`."""
    originals = dict(unet.attn_processors)
    unet.set_attn_processor({name: CaptureProcessor(store, proc) for name, proc in originals.items()})
    return originals


def restore(unet, originals: dict) -> None:
    unet.set_attn_processor(originals)


def attention_masks(cross: torch.Tensor, self_attn: torch.Tensor, spans: list[list[int]], class_ids: list[int],
                    size: int, power: int = 4, foreground: float = 0.6, uncertain: float = 0.5,
                    upsample: str = "bicubic") -> torch.Tensor:
    """Masks (N, size, size) uint8 from captured maps.

    cross: (N, HWc, tokens); self_attn: (N, HWs, HWs) row-stochastic; spans[k]: token positions of
    class k, whose VOC id is class_ids[k]. Each class map (mean over its tokens) is upsampled to the
    self-attention grid, refined by self_attn ** power, normalised to [0, 1] and upsampled to the
    image (bicubic, as Dataset Diffusion; "bilinear" for the ablation); a pixel takes the class of
    the highest map where it is >= foreground, 255 where the highest map lies in
    [uncertain, foreground), background (0) below.
    """
    if not 0.0 <= uncertain <= foreground <= 1.0:
        raise ValueError(f"need 0 <= uncertain ({uncertain}) <= foreground ({foreground}) <= 1")
    n, hw_c, _ = cross.shape
    rc, rs = int(round(hw_c**0.5)), int(round(self_attn.shape[-1] ** 0.5))
    maps = torch.stack([cross[:, :, span].mean(-1) for span in spans], 1)  # (N, C, HWc)
    maps = F.interpolate(maps.view(n, -1, rc, rc), size=(rs, rs), mode=upsample, align_corners=False).flatten(2)
    refined = maps.transpose(1, 2)  # (N, HWs, C)
    for _ in range(power):  # self_attn ** power applied to the maps, as matrix-vector products
        refined = torch.bmm(self_attn.float(), refined)
    refined = refined.transpose(1, 2)
    lo = refined.amin(-1, keepdim=True)
    hi = refined.amax(-1, keepdim=True)
    refined = (refined - lo) / (hi - lo).clamp_min(1e-8)
    up = F.interpolate(refined.view(n, -1, rs, rs), size=(size, size), mode=upsample, align_corners=False)
    best, which = up.max(1)
    ids = torch.tensor(class_ids, dtype=torch.long, device=which.device)[which]
    mask = torch.where(best >= foreground, ids, torch.zeros_like(ids))
    mask = torch.where((best >= uncertain) & (best < foreground), torch.full_like(ids, 255), mask)
    return mask.to(torch.uint8)


def attention_resolutions(unet, latent: int) -> tuple[set[int], set[int]]:
    """(cross, self) resolutions at which `unet` has attention layers, for a latent of `latent`."""
    cfg = unet.config
    levels = len(cfg.down_block_types)
    found = set()
    for i, kind in enumerate(cfg.down_block_types):
        if "Attn" in kind:
            found.add(latent // 2**i)
    for j, kind in enumerate(cfg.up_block_types):
        if "Attn" in kind:
            found.add(latent // 2 ** (levels - 1 - j))
    if cfg.mid_block_type and "Attn" in cfg.mid_block_type:
        found.add(latent // 2 ** (levels - 1))
    return set(found), set(found)  # SD's transformer blocks hold self- and cross-attention together


def pick_resolution(wanted: int, available: set[int]) -> int:
    """The available resolution nearest to `wanted` (on a log scale; the larger one on a tie)."""
    import math

    if not available:
        raise RuntimeError("the UNet has no attention layer: masks cannot be drawn from attention.")
    return min(available, key=lambda r: (abs(math.log2(r) - math.log2(max(wanted, 1))), -r))
