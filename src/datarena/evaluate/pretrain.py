"""A digit-pretrained backbone: the CPU-scale stand-in for ImageNet weights.

The SyntaGen protocol fine-tunes DeepLabv3 from an ImageNet-pretrained ResNet; nothing can be
downloaded here. `pretrained="digits"` (CLI `--pretrained digits`) starts instead from a dilated
ResNet trained, deterministically, to classify single upright MNIST digits of the *train* split
(the `mnist` grammar: centred, rotation N(0, 10 deg)): about 98.5 % accuracy after 300 steps of 64
fresh renders. It has seen neither the held-out digits of a private test set nor the test
grammar's nuisances, as ImageNet weights have not seen a challenge's test set.

Measured (docs/benchmarks.md): alone it does not lift the 11-class mIoU of the `digit_scenes`
budget above background-only (0.093 vs 0.085 from random weights); together with median-frequency
class weights it does (0.144-0.192, and target-grammar data beats prior-grammar data at both
seeds tried), so the `digit_scenes` preset uses both.

The weights are a function of (backbone, steps, seed) only; they are cached under
`$DATARENA_CACHE` (default `~/.cache/datarena`) and their sha256 goes into every report.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datarena.evaluate.checksum import state_dict_sha256
from datarena.evaluate.deeplab import BACKBONES, DilatedResNet
from datarena.progress import progress_bar

PRETRAIN_GRAMMAR = "mnist"
PRETRAIN_STEPS = 300
PRETRAIN_BATCH = 64


def cache_dir() -> Path:
    return Path(os.environ.get("DATARENA_CACHE", Path.home() / ".cache" / "datarena"))


def pretrain_digit_backbone(backbone: str = "resnet18", steps: int = PRETRAIN_STEPS, seed: int = 0,
                            batch_size: int = PRETRAIN_BATCH, lr: float = 0.05,
                            show_progress: bool = True) -> tuple[dict[str, torch.Tensor], float]:
    """Train a dilated ResNet + linear classifier on rendered train-split digits.

    Returns the trunk's state_dict (torchvision resnet key names, no `fc.`) and the accuracy
    on 1,000 fresh digits of the same grammar drawn after training.
    """
    from datarena.evaluate.normalise import normalise
    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.render import render_all

    block, layers = BACKBONES[backbone]
    grammar = load_grammar(PRETRAIN_GRAMMAR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = DilatedResNet(block, layers)
        head = nn.Linear(512 * block.expansion, 10)
    params = list(trunk.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return head(trunk(normalise(images.expand(-1, 3, -1, -1)))["out"].mean((2, 3)))

    # a fresh batch of digits per step: scene indices step*B .. (step+1)*B of the grammar's seeded stream
    data = render_all(grammar, steps * batch_size, seed=seed)
    trunk.train()
    with progress_bar(f"pretraining {backbone} on digits", total=steps, unit="it", enabled=show_progress) as advance:
        for step in range(steps):
            sl = slice(step * batch_size, (step + 1) * batch_size)
            loss = F.cross_entropy(logits(data.images[sl]), data.labels[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            advance(1, loss=float(loss.detach()))
    trunk.eval()
    check = render_all(grammar, 1000, seed=seed + 1_000_003)
    with torch.no_grad():
        accuracy = float((logits(check.images).argmax(1) == check.labels).float().mean())
    return trunk.state_dict(), accuracy


def digit_backbone(backbone: str = "resnet18", steps: int = PRETRAIN_STEPS, seed: int = 0,
                   show_progress: bool = True) -> tuple[Path, str]:
    """Path and sha256 of the cached digit-pretrained trunk, training it first if absent."""
    path = cache_dir() / f"digits_{backbone}_s{seed}_{steps}.pt"
    if not path.is_file():
        state, accuracy = pretrain_digit_backbone(backbone, steps, seed, show_progress=show_progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        if show_progress:
            print(f"digit-pretrained {backbone}: {accuracy:.3f} accuracy on fresh digits, saved to {path}")
    return path, state_dict_sha256(torch.load(path, map_location="cpu", weights_only=True))
