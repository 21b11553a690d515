"""torchvision's ImageNet ResNet weights, found locally and verified; nothing is downloaded.

torchvision publishes each file under a name that carries the first hex digits of its sha256
(`resnet50-0676ba61.pth`), and `torch.hub` refuses a download whose sha256 does not start with
them. datarena applies the same check to the file it finds in the hub cache
(`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch`) or is given with `--backbone-weights`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from datarena.data.checksums import sha256_file
from datarena.errors import ConfigError

URL = "https://download.pytorch.org/models/"
# backbone -> the published files, preferred first (IMAGENET1K_V1 is what torchvision's
# deeplabv3_resnet50 trains from; V2 is accepted too)
PUBLISHED: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
}


@dataclass(frozen=True)
class Weights:
    path: Path
    name: str  # the published file it matches
    sha256: str


def hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def published_prefix(name: str) -> str:
    return re.search(r"-([a-f0-9]{8,})\.pth$", name).group(1)


def _match(digest: str, backbone: str) -> str | None:
    return next((n for n in PUBLISHED[backbone] if digest.startswith(published_prefix(n))), None)


def _expected(backbone: str) -> str:
    return ", ".join(f"{n} (sha256 starting {published_prefix(n)})" for n in PUBLISHED[backbone])


def find_imagenet_weights(backbone: str, explicit: str | Path | None = None) -> Weights:
    """The verified ImageNet file for `backbone`: `explicit` if given, else the hub cache."""
    if backbone not in PUBLISHED:
        raise ConfigError(f"no published ImageNet weights are known for {backbone}; use one of {', '.join(PUBLISHED)}.")
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--backbone-weights {path} does not exist; expected {_expected(backbone)}.")
        digest = sha256_file(path)
        name = _match(digest, backbone)
        if name is None:
            raise ConfigError(f"{path} has sha256 {digest[:16]}…, which matches none of torchvision's published "
                              f"ImageNet files for {backbone}: {_expected(backbone)}. Use the original file.")
        return Weights(path, name, digest)
    cache = hub_checkpoints()
    for name in PUBLISHED[backbone]:
        path = cache / name
        if path.is_file():
            digest = sha256_file(path)
            if _match(digest, backbone) != name:
                raise ConfigError(f"{path} is damaged: its sha256 {digest[:16]}… does not start with "
                                  f"{published_prefix(name)} as its published name says; replace it.")
            return Weights(path, name, digest)
    first = PUBLISHED[backbone][0]
    raise ConfigError(
        f"this budget starts from torchvision's ImageNet {backbone} weights, and none were found. Put "
        f"{first} (sha256 starting {published_prefix(first)}, from {URL}{first}) in {cache}, or pass "
        f"--backbone-weights FILE; to train from random weights on purpose, pass --pretrained none.")
