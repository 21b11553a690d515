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


def checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a saved model, normalised.

    Accepted: a plain state_dict; a checkpoint with a "model" entry (datarena's, or
    torchvision's reference `{"model", "optimizer", "args": argparse.Namespace, ...}`); a
    DistributedDataParallel state_dict whose keys all start with "module." (the prefix is
    removed). Loaded with `weights_only=True` (argparse.Namespace allowed): arbitrary pickles
    are refused.
    """
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def checkpoint_sha256(path: str | Path) -> str:
    return state_dict_sha256(checkpoint_state(path))
