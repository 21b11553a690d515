"""Meta-Sim training: move a scene generator from a prior grammar toward a target distribution.

The loop is the one Meta-Sim trainer (`metasim.trainer.fit`); this module is the MNIST pair's
`Problem`. Each outer step ("epoch") combines two objectives:

* distribution: MMD (mixture of Gaussian kernels) between fixed features of images rendered
  from the generator's output and of target validation images. The renderer is differentiable,
  so this gradient is exact (no finite differences).
* task: a score-function (REINFORCE) estimate of the gradient of the task network's accuracy on
  target validation images. Each candidate dataset draws one exploration offset
  delta ~ N(0, explore_std^2) per mutable attribute, shared by all its scenes (a correlated
  Gaussian around the generator's output; independent per-object noise averages away over a
  thousand scenes and leaves almost no signal). A fresh task network is trained on the candidate
  dataset, its validation accuracy R is the reward, and the surrogate -(R - b) log p(sample) with a
  moving-average baseline b gives the gradient. Candidates come in antithetic pairs
  (delta, -delta) that share scenes and the task network's seed.

Target images: `val` digits for the MMD and the reward, disjoint `test` digits for reporting.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

import datarena
from datarena.errors import ConfigError
from datarena.metasim.features import load_feature_net, median_bandwidths, mmd2
from datarena.metasim.generator import (
    MUTABLE,
    SceneGenerator,
    circular_mean_degrees,
    denormalise,
    pretrain_identity,
)
from datarena.metasim.task import accuracy, train_task_net
from datarena.metasim.trainer import (
    Problem,
    TrainerConfig,
    fit_with_restarts,
    plot_curves,
    save_run,
)
from datarena.scenes.grammar import SceneBatch, SceneGrammar, load_grammar
from datarena.scenes.render import Rendered, render, render_all
from datarena.seeding import seeded_by


class MetaSimConfig(TrainerConfig):
    """The MNIST pairs' settings (the loop's own: `trainer.TrainerConfig`).

    Default (measured, docs/benchmarks.md): the MMD gradient, after 4 restarts of the rotation
    (0/90/180/270 deg) chosen by a task score; the REINFORCE term (`loss="both"`) costs 4x the time
    and, once the restart picks the right basin, adds nothing measurable."""

    loss: Literal["both", "mmd", "task"] = "mmd"

    mmd_batch: int = Field(256, ge=8)
    mmd_warmup: float = Field(0.25, ge=0, le=1, description="fraction of epochs over which the MMD weight ramps up from 0")
    target_images: int = Field(1000, ge=10, description="target validation scenes (MMD and reward)")
    task_images: int = Field(1024, ge=16, description="scenes per candidate dataset")
    task_steps: int = Field(100, ge=1, description="Adam steps of the task network per candidate")
    pairs: int = Field(2, ge=1, description="antithetic candidate pairs per epoch")
    restarts: int = Field(4, ge=1, description="rotation starts 0, 90, 180, 270 deg; the best continues")
    score_images: int = Field(2048, ge=16, description="scenes of each restart's task score")
    score_steps: int = Field(300, ge=1, description="Adam steps of each restart's task network")
    pretrain_steps: int = Field(200, ge=0)
    eval_images: int = Field(8000, ge=10, description="training scenes for the final task networks")
    eval_steps: int = Field(800, ge=1)
    test_images: int = Field(2000, ge=10, description="target test scenes for reporting")
    class_conditional: bool = False


def with_split(grammar: SceneGrammar, split: str) -> SceneGrammar:
    return grammar.model_copy(update={"object": grammar.object.model_copy(update={"split": split})})


def _check_pair(prior: SceneGrammar, target: SceneGrammar) -> None:
    if prior.canvas != target.canvas:
        raise ConfigError(f"prior canvas {prior.canvas} differs from target canvas {target.canvas}; Meta-Sim needs one canvas size.")


@dataclass
class MetaSimResult:
    out: Path
    history: list[dict]
    report: dict
    generator: SceneGenerator = field(repr=False)


def digit_attributes(gen: SceneGenerator, batch: SceneBatch) -> dict:
    with torch.no_grad():
        attrs = denormalise(gen.mean_normalised(batch), gen.canvas)[batch.present]
    return {
        "rotation": circular_mean_degrees(attrs[:, MUTABLE.index("rotation")]),
        "x": float(attrs[:, MUTABLE.index("x")].mean()),
        "y": float(attrs[:, MUTABLE.index("y")].mean()),
        "scale": float(attrs[:, MUTABLE.index("scale")].mean()),
    }


def evaluate_generators(prior: SceneGrammar, target: SceneGrammar, generator: SceneGenerator | None,
                        cfg: MetaSimConfig) -> dict:
    """Target test accuracy of task networks trained on prior / learned / target (oracle) data."""
    test = render_all(with_split(target, "test"), cfg.test_images, cfg.seed + 7_000_003)
    sources = {"prior": (prior, None), "target_oracle": (with_split(target, "train"), None)}
    if generator is not None:
        sources["learned"] = (prior, generator)
    out = {}
    for name, (grammar, gen) in sources.items():
        t0 = time.perf_counter()
        data = render_all(grammar, cfg.eval_images, cfg.seed + 5_000_011, transform=gen)
        net = train_task_net(data.images, data.labels, cfg.eval_steps, seed=cfg.seed + 31)
        out[name] = {"target_test_accuracy": accuracy(net, test.images, test.labels), "seconds": time.perf_counter() - t0}
    if "learned" in out:
        out["learned_over_oracle"] = out["learned"]["target_test_accuracy"] / max(out["target_oracle"]["target_test_accuracy"], 1e-9)
    return out


class DigitProblem(Problem):
    """The MNIST pairs for the one trainer: a per-object generator, the digit renderer, features of a
    (random or given) conv net for the MMD, and a task network's accuracy on target val as reward."""

    def __init__(self, prior: SceneGrammar, target: SceneGrammar, cfg: MetaSimConfig, gen: SceneGenerator,
                 feat, target_feats: torch.Tensor, bandwidths, reward_fn, probe: SceneBatch, target_val: Rendered):
        self.title = f"{prior.name} -> {target.name}"
        self.prior, self.cfg, self.generator, self.feat = prior, cfg, gen, feat
        self.target_feats, self.bandwidths, self.reward_fn, self.probe = target_feats, bandwidths, reward_fn, probe
        self.target_val = target_val

    def mmd(self, epoch: int) -> torch.Tensor:
        cfg = self.cfg
        batch = self.prior.sample(cfg.mmd_batch, cfg.seed + 101, start=epoch * cfg.mmd_batch)
        images = render(self.generator(batch), self.prior).images
        return mmd2(self.feat(images), self.target_feats, self.bandwidths)

    def candidate(self, epoch: int, pair: int, explore: np.random.Generator):
        cfg = self.cfg
        scenes = self.prior.sample(cfg.task_images, cfg.seed + 202, start=(epoch * cfg.pairs + pair) * cfg.task_images)
        mean = self.generator.mean_normalised(scenes)  # (N, K, M), with gradients
        present = scenes.present
        delta = torch.from_numpy(explore.normal(0.0, cfg.explore_std, size=len(MUTABLE)).astype(np.float32))

        def log_prob(sample: torch.Tensor) -> torch.Tensor:  # the shared offset given the mean, averaged over objects
            offset = (sample - mean)[present].mean(0)
            return -(offset.pow(2) / (2 * cfg.explore_std**2)).sum()

        return scenes, mean, delta, log_prob

    def reward(self, scenes: SceneBatch, sample: torch.Tensor, seed: int) -> float:
        moved = self.generator.apply(scenes, sample)
        with torch.no_grad():
            data = render(moved, self.prior)
        return self.reward_fn(moved, data, seed)

    def attributes(self, epoch: int, last: bool) -> dict:
        return digit_attributes(self.generator, self.probe)

    def turn_periodic(self, fraction: float) -> None:
        with torch.no_grad():  # the rotation output is z + net(...): its last bias shifts it (2.0 = a full turn)
            self.generator.net[-1].bias[MUTABLE.index("rotation")] += 2.0 * fraction

    def task_score(self) -> float:
        """Accuracy on the target val digits of a task network trained on `score_images` renders (the
        same scenes and network seed for every restart: common random numbers)."""
        cfg = self.cfg
        with torch.no_grad():
            data = render_all(self.prior, cfg.score_images, cfg.seed + 6_000_007, transform=self.generator)
        net = train_task_net(data.images, data.labels, cfg.score_steps, seed=cfg.seed + 53)
        return accuracy(net, self.target_val.images, self.target_val.labels)


def digit_problem(prior: SceneGrammar, target: SceneGrammar, cfg: MetaSimConfig, features: str | Path | None = None,
                  reward_fn=None):
    """(make_problem, pretrain_mse): a factory of `DigitProblem`s for a pair, each with a fresh copy of
    one generator pre-trained to reproduce the prior (restarts start from it)."""
    feat = load_feature_net(features, seed=cfg.seed)
    target_val = render_all(with_split(target, "val"), cfg.target_images, cfg.seed + 1_000_003)
    with torch.no_grad():
        target_feats = feat(target_val.images)
        prior_imgs = render_all(prior, cfg.mmd_batch, cfg.seed + 3).images
        bandwidths = median_bandwidths(feat(prior_imgs), target_feats)
    start = SceneGenerator(prior.canvas, class_conditional=cfg.class_conditional)
    pretrain_loss = pretrain_identity(start, lambda step: prior.sample(256, cfg.seed + 11, start=step * 256), cfg.pretrain_steps)
    reward_fn = reward_fn or task_reward(target_val, cfg)
    probe = prior.sample(1024, cfg.seed + 17)

    def make_problem() -> DigitProblem:
        return DigitProblem(prior, target, cfg, copy.deepcopy(start), feat, target_feats, bandwidths, reward_fn,
                            probe, target_val)

    return make_problem, pretrain_loss


@seeded_by(lambda a: (a.arguments["cfg"] or MetaSimConfig()).seed)
def train_metasim(prior: SceneGrammar | str, target: SceneGrammar | str, out: str | Path,
                  cfg: MetaSimConfig | None = None, features: str | Path | None = None,
                  force: bool = False, evaluate: bool = True, show_progress: bool = True,
                  reward_fn=None) -> MetaSimResult:
    """Train a per-object generator from an MNIST prior grammar toward the target with the one
    Meta-Sim loop (`trainer.fit`); evaluate prior / learned / oracle task networks; write the run."""
    cfg = cfg or MetaSimConfig()
    prior = load_grammar(prior) if isinstance(prior, str) else prior
    target = load_grammar(target) if isinstance(target, str) else target
    _check_pair(prior, target)
    t_start = time.perf_counter()
    # the generator's initialisation draws from the global RNG, seeded with cfg.seed by @seeded_by
    make_problem, pretrain_loss = digit_problem(prior, target, cfg, features, reward_fn)
    reward_name = "custom reward_fn" if reward_fn else "task network accuracy on target val digits"
    problem, history, restarts = fit_with_restarts(make_problem, cfg, show_progress)
    gen = problem.generator

    last = history[-1]
    report = {
        "prior": prior.name, "target": target.name, "config": cfg.model_dump(), "pretrain_identity_mse": pretrain_loss,
        "reward": reward_name,
        "features": str(features) if features else f"seeded random FeatureNet (seed {cfg.seed})",
        "final": {"epoch": last["epoch"], "mmd": last["mmd"], "reward": last["reward"], **last["attributes"]},
        "restarts": restarts,
        "train_seconds": time.perf_counter() - t_start, "datarena_version": datarena.__version__,
    }
    if evaluate:
        report["evaluation"] = evaluate_generators(prior, target, gen, cfg)
    report["total_seconds"] = time.perf_counter() - t_start
    checkpoint = {"state_dict": gen.state_dict(), "canvas": prior.canvas, "class_conditional": cfg.class_conditional,
                  "prior": prior.model_dump(mode="json"), "target": target.name, "config": cfg.model_dump()}
    targets = {"rotation": _wrap(target.object.rotation.mean_value()), "x": target.object.x.mean_value(),
               "y": target.object.y.mean_value(), "scale": target.object.scale.mean_value()}

    def pictures(tmp: Path) -> None:
        plot_curves(history, tmp / "curves.png", ["rotation", "x", "y"], targets,
                    reward_label="task accuracy on target val (reward)")
        _sample_grids(prior, target, gen, tmp, cfg.seed)

    save_run(out, checkpoint, report, history, force, pictures)
    return MetaSimResult(Path(out), history, report, gen)


def task_reward(target_val: Rendered, cfg: MetaSimConfig):
    """The Meta-Sim reward: accuracy on target validation images of a task network trained from scratch."""

    def reward(scenes: SceneBatch, data: Rendered, seed: int) -> float:
        net = train_task_net(data.images, data.labels, cfg.task_steps, seed=seed)
        return accuracy(net, target_val.images, target_val.labels)

    return reward


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def rotation_error(learned: float, target: float) -> float:
    return abs(_wrap(learned - target))


def _sample_grids(prior, target, gen, out: Path, seed: int) -> None:
    from datarena.scenes.writers import save_grid

    batch = prior.sample(64, seed + 999)
    with torch.no_grad():
        save_grid(render(batch, prior).images, out / "samples_prior.png", title=f"prior: {prior.name}")
        save_grid(render(gen(batch), prior).images, out / "samples_learned.png", title="learned generator")
    t = with_split(target, "val")
    save_grid(render(t.sample(64, seed + 999), t).images, out / "samples_target.png", title=f"target: {target.name}")


def summarise(result: MetaSimResult) -> str:
    r = result.report
    f = r["final"]
    lines = [f"final: MMD^2 {f['mmd']:.4g}, mean rotation {f['rotation']:.1f} deg, x {f['x']:.1f}, y {f['y']:.1f}"]
    ev = r.get("evaluation")
    if ev:
        accs = ", ".join(f"{k} {v['target_test_accuracy']:.3f}" for k, v in ev.items() if isinstance(v, dict))
        lines.append(f"target test accuracy: {accs}; learned / oracle = {ev['learned_over_oracle']:.3f}")
    lines.append(f"{r['total_seconds']:.0f} s")
    return "\n".join(lines)
