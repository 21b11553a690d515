"""Meta-Sim training: move a scene generator from a prior grammar toward a target distribution.

Each outer step ("epoch") combines two objectives:

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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

import datarena
from datarena.data.checksums import atomic_directory, write_json
from datarena.errors import ConfigError
from datarena.metasim.features import load_feature_net, median_bandwidths, mmd2
from datarena.metasim.generator import (
    MUTABLE,
    SceneGenerator,
    circular_mean_degrees,
    denormalise,
    pretrain_identity,
)
from datarena.metasim.reinforce import moving_baseline, reinforce
from datarena.metasim.task import accuracy, train_task_net
from datarena.progress import progress_bar
from datarena.scenes.grammar import SceneBatch, SceneGrammar, load_grammar
from datarena.scenes.render import Rendered, render, render_all
from datarena.seeding import seeded_by


class MetaSimConfig(BaseModel):
    epochs: int = Field(80, ge=1)
    loss: Literal["both", "mmd", "task"] = "both"
    lr: float = Field(0.01, gt=0)
    mmd_batch: int = Field(256, ge=8)
    mmd_weight: float = 1.0
    mmd_warmup: float = Field(0.25, ge=0, le=1, description="fraction of epochs over which the MMD weight ramps up from 0")
    task_weight: float = 1.0
    target_images: int = Field(1000, ge=10, description="target validation scenes (MMD and reward)")
    task_images: int = Field(1024, ge=16, description="scenes per candidate dataset")
    task_steps: int = Field(100, ge=1, description="Adam steps of the task network per candidate")
    pairs: int = Field(2, ge=1, description="antithetic candidate pairs per epoch")
    explore_std: float = Field(0.25, gt=0, description="exploration std in normalised units")
    baseline_momentum: float = Field(0.9, ge=0, lt=1)
    pretrain_steps: int = Field(200, ge=0)
    eval_images: int = Field(8000, ge=10, description="training scenes for the final task networks")
    eval_steps: int = Field(800, ge=1)
    test_images: int = Field(2000, ge=10, description="target test scenes for reporting")
    class_conditional: bool = False
    seed: int = 0


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


def attribute_means(gen: SceneGenerator, batch: SceneBatch) -> dict:
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


@seeded_by(lambda a: (a.arguments["cfg"] or MetaSimConfig()).seed)
def train_metasim(prior: SceneGrammar | str, target: SceneGrammar | str, out: str | Path,
                  cfg: MetaSimConfig | None = None, features: str | Path | None = None,
                  force: bool = False, evaluate: bool = True, show_progress: bool = True,
                  reward_fn=None) -> MetaSimResult:
    cfg = cfg or MetaSimConfig()
    prior = load_grammar(prior) if isinstance(prior, str) else prior
    target = load_grammar(target) if isinstance(target, str) else target
    _check_pair(prior, target)
    t_start = time.perf_counter()
    # the generator's initialisation draws from the global RNG, seeded with cfg.seed by @seeded_by
    feat = load_feature_net(features, seed=cfg.seed)
    target_val = render_all(with_split(target, "val"), cfg.target_images, cfg.seed + 1_000_003)
    with torch.no_grad():
        target_feats = feat(target_val.images)
        prior_imgs = render_all(prior, cfg.mmd_batch, cfg.seed + 3).images
        bandwidths = median_bandwidths(feat(prior_imgs), target_feats)

    gen = SceneGenerator(prior.canvas, class_conditional=cfg.class_conditional)
    pretrain_loss = pretrain_identity(gen, lambda step: prior.sample(256, cfg.seed + 11, start=step * 256), cfg.pretrain_steps)
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr * 0.05)
    explore = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2024]))
    baseline: float | None = None
    history: list[dict] = []
    probe = prior.sample(1024, cfg.seed + 17)
    use_mmd, use_task = cfg.loss in ("both", "mmd"), cfg.loss in ("both", "task")
    reward_name = "custom reward_fn" if reward_fn else "task network accuracy on target val digits"
    reward_fn = reward_fn or task_reward(target_val, cfg)

    with progress_bar(f"meta-sim {prior.name} -> {target.name}", total=cfg.epochs, unit="epochs", enabled=show_progress) as advance:
        for epoch in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            batch = prior.sample(cfg.mmd_batch, cfg.seed + 101, start=epoch * cfg.mmd_batch)
            images = render(gen(batch), prior).images
            mmd = mmd2(feat(images), target_feats, bandwidths)
            ramp = min(1.0, (epoch + 1) / max(cfg.mmd_warmup * cfg.epochs, 1e-9)) if use_task else 1.0
            loss = cfg.mmd_weight * ramp * mmd if use_mmd else mmd.detach() * 0.0
            rewards = []
            if use_task:
                surrogate, rewards = task_surrogate(gen, prior, cfg, epoch, explore, baseline, reward_fn)
                loss = loss + cfg.task_weight * surrogate
                baseline = moving_baseline(baseline, rewards, cfg.baseline_momentum)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            sched.step()
            means = attribute_means(gen, probe)
            row = {"epoch": epoch + 1, "mmd": float(mmd.detach()), "reward": float(np.mean(rewards)) if rewards else None, **means}
            history.append(row)
            advance(1, mmd=row["mmd"], reward=row["reward"] if rewards else "-", rot=means["rotation"])

    report = {
        "prior": prior.name, "target": target.name, "config": cfg.model_dump(), "pretrain_identity_mse": pretrain_loss,
        "reward": reward_name,
        "features": str(features) if features else f"seeded random FeatureNet (seed {cfg.seed})",
        "final": history[-1], "train_seconds": time.perf_counter() - t_start, "datarena_version": datarena.__version__,
    }
    if evaluate:
        report["evaluation"] = evaluate_generators(prior, target, gen, cfg)
    report["total_seconds"] = time.perf_counter() - t_start
    with atomic_directory(out, force=force) as tmp:
        torch.save({"state_dict": gen.state_dict(), "canvas": prior.canvas, "class_conditional": cfg.class_conditional, "prior": prior.model_dump(mode="json"),
                    "target": target.name, "config": cfg.model_dump()}, tmp / "generator.pt")
        write_json(tmp / "history.json", history)
        write_json(tmp / "report.json", report)
        plot_curves(history, target, tmp / "curves.png")
        _sample_grids(prior, target, gen, tmp, cfg.seed)
    return MetaSimResult(Path(out), history, report, gen)


def task_reward(target_val: Rendered, cfg: MetaSimConfig):
    """The Meta-Sim reward: accuracy on target validation images of a task network trained from scratch."""

    def reward(scenes: SceneBatch, data: Rendered, seed: int) -> float:
        net = train_task_net(data.images, data.labels, cfg.task_steps, seed=seed)
        return accuracy(net, target_val.images, target_val.labels)

    return reward


def task_surrogate(gen, prior, cfg, epoch, explore, baseline, reward_fn):
    """REINFORCE surrogate over antithetic candidate pairs; returns (surrogate, rewards).

    reward_fn(scenes, rendered, seed) -> float scores one candidate dataset.
    """
    rewards, log_probs = [], []
    for pair in range(cfg.pairs):
        scenes = prior.sample(cfg.task_images, cfg.seed + 202, start=(epoch * cfg.pairs + pair) * cfg.task_images)
        mean = gen.mean_normalised(scenes)  # (N, K, M), with gradients
        present = scenes.present
        delta = torch.from_numpy(explore.normal(0.0, cfg.explore_std, size=len(MUTABLE)).astype(np.float32))
        for sign in (1.0, -1.0):
            sample = mean.detach() + sign * delta  # a draw from the generator's output distribution
            with torch.no_grad():
                data = render(gen.apply(scenes, sample), prior)
            reward = reward_fn(gen.apply(scenes, sample), data, cfg.seed * 7919 + epoch * 31 + pair)
            rewards.append(reward)
            # log-density of the shared offset given the current mean (x - mu averaged over objects)
            offset = (sample - mean)[present].mean(0)
            log_probs.append(-(offset.pow(2) / (2 * cfg.explore_std**2)).sum())
    return reinforce(rewards, log_probs, baseline), rewards


def plot_curves(history: list[dict], target: SceneGrammar, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    axes[0].plot(epochs, [h["mmd"] for h in history])
    axes[0].set_title("MMD$^2$ (features)")
    axes[0].set_yscale("log")
    rewards = [h["reward"] for h in history]
    if any(r is not None for r in rewards):
        axes[1].plot(epochs, [np.nan if r is None else r for r in rewards])
    axes[1].set_title("task accuracy on target val (reward)")
    axes[2].plot(epochs, [h["rotation"] for h in history], label="learned")
    axes[2].axhline(_wrap(target.object.rotation.mean_value()), color="k", ls="--", label="target")
    axes[2].set_title("mean rotation (deg)")
    axes[2].legend()
    for key, ls in (("x", "-"), ("y", ":")):
        axes[3].plot(epochs, [h[key] for h in history], ls, label=f"learned {key}")
        axes[3].axhline(getattr(target.object, key).mean_value(), color="k", ls=ls, lw=0.8)
    axes[3].set_title("mean position (px); black = target")
    axes[3].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
