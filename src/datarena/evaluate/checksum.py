"""Model checksum: sha256 over a canonical serialisation of a state_dict."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Sorted keys; for each: key, dtype, shape, raw little-endian bytes. Independent of pickling."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        digest.update(key.encode() + b"\0" + str(t.dtype).encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def checkpoint_sha256(path: str | Path) -> str:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    return state_dict_sha256(state)
