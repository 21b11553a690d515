"""Meta-Sim on scene graphs: learn a graph generator that moves `aerial` scenes toward `aerial_target`.

The distribution term is exact: the renderer is differentiable in every attribute, so the MMD
between fixed random-conv features of generated and target renders is back-propagated into the
generator. The task is car segmentation: a DeepLabv3-ResNet18 (the evaluator's small backbone)
trained on rendered scenes, scored by the car class's IoU on held-out target renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from datarena.metasim.features import FeatureNet, median_bandwidths, mmd2
from datarena.metasim.graph_generator import GraphGenerator
from datarena.progress import progress_bar
from datarena.scenes.graph import (
    SceneGraphGrammar,
    load_graph_grammar,
    render_graph,
    sample_graphs,
)


class AerialConfig(BaseModel):
    epochs: int = Field(60, ge=1)
    batch: int = Field(96, ge=4)
    lr: float = Field(0.003, gt=0)  # 0.03 diverged (roads pushed off the canvas)
    hidden: int = 64
    rounds: int = Field(2, ge=0)
    per_object: bool = False
    target_images: int = Field(192, ge=8, description="target validation renders for the MMD")
    eval_steps: int = Field(150, ge=1, description="training steps of each car-segmentation network")
    eval_batch: int = 16
    test_images: int = Field(160, ge=8, description="held-out target renders the IoU is measured on")
    seed: int = 0


@dataclass
class AerialResult:
    history: list[dict]
    report: dict
    generator: GraphGenerator


def car_class(grammar: SceneGraphGrammar) -> int:
    return grammar.classes.index("car") + 1


def train_aerial(prior: SceneGraphGrammar | str = "aerial", target: SceneGraphGrammar | str = "aerial_target",
                 cfg: AerialConfig | None = None, show_progress: bool = True) -> AerialResult:
    """MMD training of a graph generator from the prior grammar toward target renders."""
    cfg = cfg or AerialConfig()
    prior = load_graph_grammar(prior) if isinstance(prior, str) else prior
    target = load_graph_grammar(target) if isinstance(target, str) else target
    torch.manual_seed(cfg.seed)
    gen = GraphGenerator(prior, cfg.hidden, cfg.rounds, cfg.per_object)
    feats = FeatureNet(seed=cfg.seed, in_channels=3).eval()
    with torch.no_grad():
        tgt = feats(render_graph(target, sample_graphs(target, cfg.target_images, cfg.seed + 1_000_003)).images)
        probe = sample_graphs(prior, cfg.target_images, cfg.seed + 2_000_003)
        before = feats(render_graph(prior, probe).images)  # rendered once: bandwidths and the starting MMD
        bw = median_bandwidths(before, tgt)
        mmd_before = float(mmd2(before, tgt, bw))
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
    history = []
    with progress_bar("meta-sim (aerial, MMD)", total=cfg.epochs, unit="epochs", enabled=show_progress) as advance:
        for epoch in range(cfg.epochs):
            batch = sample_graphs(prior, cfg.batch, cfg.seed * 1_000 + epoch, start=0)
            images = render_graph(prior, batch, gen(batch)).images
            loss = mmd2(feats(images), tgt[torch.randperm(len(tgt))[: cfg.batch]], bw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"epoch": epoch, "mmd": float(loss.detach())})
            advance(1, mmd=float(loss.detach()))
    with torch.no_grad():
        mmd_after = float(mmd2(feats(render_graph(prior, probe, gen(probe)).images), tgt, bw))
    return AerialResult(history, {"mmd_before": mmd_before, "mmd_after": mmd_after}, gen)


def _segmentation_batch(grammar: SceneGraphGrammar, n: int, seed: int, gen: GraphGenerator | None):
    batch = sample_graphs(grammar, n, seed)
    with torch.no_grad():
        r = render_graph(grammar, batch, gen(batch) if gen is not None else None)
    return r.images, (r.masks == car_class(grammar)).long()


def car_iou(train_grammar: SceneGraphGrammar, test_grammar: SceneGraphGrammar, cfg: AerialConfig,
            gen: GraphGenerator | None = None) -> float:
    """Train DeepLabv3-ResNet18 on renders of `train_grammar` (through `gen`), return car IoU on target renders."""
    from datarena.evaluate.deeplab import deeplabv3

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 17)
        net = deeplabv3(2, "resnet18", aux_loss=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    weight = torch.tensor([1.0, 5.0])  # cars are a few % of the pixels
    net.train()
    for step in range(cfg.eval_steps):
        images, masks = _segmentation_batch(train_grammar, cfg.eval_batch, cfg.seed * 100_000 + step, gen)
        for g in opt.param_groups:
            g["lr"] = 0.02 * (1 - step / cfg.eval_steps) ** 0.9
        loss = F.cross_entropy(net(images)["out"], masks, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    inter = union = 0
    with torch.no_grad():
        for start in range(0, cfg.test_images, 32):
            n = min(32, cfg.test_images - start)
            batch = sample_graphs(test_grammar, n, cfg.seed + 9_000_001, start=start)
            r = render_graph(test_grammar, batch)
            pred = net(r.images)["out"].argmax(1) == 1
            truth = r.masks == car_class(test_grammar)
            inter += int((pred & truth).sum())
            union += int((pred | truth).sum())
    return inter / max(union, 1)


def evaluate_aerial(prior: str, target: str, cfg: AerialConfig, gen: GraphGenerator | None) -> dict:
    """Car IoU on held-out target renders of networks trained on prior / learned / target scenes."""
    p, t = load_graph_grammar(prior), load_graph_grammar(target)
    out = {}
    for name, grammar, g in (("prior", p, None), ("learned", p, gen), ("target_oracle", t, None)):
        if name == "learned" and g is None:
            continue
        t0 = time.perf_counter()
        out[name] = {"car_iou": car_iou(grammar, t, cfg, g), "seconds": time.perf_counter() - t0}
    oracle = max(out["target_oracle"]["car_iou"], 1e-9)
    out["prior_over_oracle"] = out["prior"]["car_iou"] / oracle
    if "learned" in out:
        out["learned_over_oracle"] = out["learned"]["car_iou"] / oracle
    return out


__all__ = ["AerialConfig", "AerialResult", "car_iou", "evaluate_aerial", "train_aerial"]
