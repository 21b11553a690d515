"""The one Meta-Sim training loop, for every pair (MNIST grammars, scene graphs).

A `Problem` makes a pair concrete and is what the loop swaps: the generator being trained, the
differentiable renderer behind its MMD term, how a task candidate is drawn around the generator's
output, and the reward that scores a candidate dataset. The loop owns the rest, the same for all:

* each epoch, the distribution term: the problem's MMD between features of generated renders and
  of target renders (an exact gradient through the renderer), ramped in over `mmd_warmup` of the
  epochs when the task term is on;
* every `task_every` epochs, the task term: `pairs` antithetic candidate pairs (mean +- delta, one
  exploration offset per (node type,) attribute shared by a candidate's scenes), each scored by the
  reward, combined by REINFORCE with a moving-average baseline (`metasim.reinforce`);
* Adam with a cosine schedule down to 5 % of the learning rate; a history row per epoch (MMD,
  mean reward, and the problem's attribute readout where it gives one); a progress bar.

`train.train_metasim` (MNIST) and `aerial.train_aerial` (scene graphs) build their problem and call
`fit`; both write their runs with `save_run` and plot with `plot_curves`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from datarena.errors import ConfigError
from datarena.metasim.reinforce import moving_baseline, reinforce
from datarena.progress import progress_bar


class TrainerConfig(BaseModel):
    """The loop's settings; each pair's config extends it with its own (and its own defaults)."""

    epochs: int = Field(80, ge=1)
    loss: Literal["both", "mmd", "task"] = "both"
    lr: float = Field(0.01, gt=0, description="Adam, cosine-annealed to 5 %")
    mmd_weight: float = 1.0
    mmd_warmup: float = Field(0.0, ge=0, le=1, description="fraction of epochs over which the MMD weight ramps up from 0 (task term on)")
    task_weight: float = Field(1.0, ge=0)
    task_every: int = Field(1, ge=1, description="a task step every this many epochs (each costs seconds)")
    pairs: int = Field(1, ge=1, description="antithetic candidate pairs per task step")
    explore_std: float = Field(0.25, gt=0, description="exploration std in normalised attribute units")
    baseline_momentum: float = Field(0.9, ge=0, lt=1)
    restarts: int = Field(1, ge=1, description="starts spread evenly over a turn of every periodic attribute; the "
                          "best after `restart_epochs` of MMD continues (1: no restarts)")
    restart_epochs: int = Field(20, ge=1, description="MMD-only epochs each start trains before the choice")
    select_by: Literal["task", "mmd"] = Field("task", description="how the restart is chosen: the problem's task score "
                                              "(higher wins) or the final MMD (lower wins)")
    seed: int = 0


class Problem(ABC):
    """A Meta-Sim pair: generator, renderer and reward (see the module docstring)."""

    title: str
    generator: torch.nn.Module

    @abstractmethod
    def mmd(self, epoch: int) -> torch.Tensor:
        """The distribution term of this epoch's batch (differentiable in the generator)."""

    @abstractmethod
    def candidate(self, epoch: int, pair: int, explore: np.random.Generator
                  ) -> tuple[object, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(scenes, mean, delta, log_prob): the generator's output `mean` (with gradients) on fresh
        scenes, an exploration offset `delta` drawn from `explore`, and the log-density of a sample
        given the mean (what REINFORCE differentiates)."""

    @abstractmethod
    def reward(self, scenes, sample: torch.Tensor, seed: int) -> float:
        """The task score of a candidate dataset: `scenes` with the generator's attributes `sample`."""

    def attributes(self, epoch: int, last: bool) -> dict | None:
        """Where the generator has moved the attributes so far (a history row's 'attributes'), or None."""
        return None

    def turn_periodic(self, fraction: float) -> None:
        """Move the generator's output `fraction` of a full turn on every periodic attribute (restarts)."""
        raise ConfigError(f"{type(self).__name__} cannot restart over periodic attributes; use restarts: 1.")

    def task_score(self) -> float:
        """A low-variance task score of the generator as it is now (chooses among restarts; higher is better)."""
        raise ConfigError(f"{type(self).__name__} has no task score to choose restarts by; use select_by: mmd "
                          f"or restarts: 1.")


def task_surrogate(problem: Problem, cfg: TrainerConfig, epoch: int, explore: np.random.Generator,
                   baseline: float | None) -> tuple[torch.Tensor, list[float]]:
    """REINFORCE surrogate over antithetic candidate pairs; returns (surrogate, rewards)."""
    rewards, log_probs = [], []
    for pair in range(cfg.pairs):
        scenes, mean, delta, log_prob = problem.candidate(epoch, pair, explore)
        for sign in (1.0, -1.0):
            sample = mean.detach() + sign * delta  # a draw from the generator's output distribution
            rewards.append(problem.reward(scenes, sample, cfg.seed * 7919 + epoch * 31 + pair))
            log_probs.append(log_prob(sample))
    return reinforce(rewards, log_probs, baseline), rewards


def fit(problem: Problem, cfg: TrainerConfig, show_progress: bool = True) -> list[dict]:
    """Train `problem.generator` in place; returns the history (one row per epoch)."""
    gen = problem.generator
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr * 0.05)
    explore = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2024]))
    use_mmd, use_task = cfg.loss in ("both", "mmd"), cfg.loss in ("both", "task")
    baseline: float | None = None
    history: list[dict] = []
    with progress_bar(f"meta-sim {problem.title} ({cfg.loss})", total=cfg.epochs, unit="epochs",
                      enabled=show_progress) as advance:
        for epoch in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            mmd = problem.mmd(epoch)
            ramp = min(1.0, (epoch + 1) / max(cfg.mmd_warmup * cfg.epochs, 1e-9)) if use_task else 1.0
            loss = cfg.mmd_weight * ramp * mmd if use_mmd else mmd.detach() * 0.0
            rewards: list[float] = []
            if use_task and epoch % cfg.task_every == 0:
                surrogate, rewards = task_surrogate(problem, cfg, epoch, explore, baseline)
                loss = loss + cfg.task_weight * surrogate
                baseline = moving_baseline(baseline, rewards, cfg.baseline_momentum)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            sched.step()
            row = {"epoch": epoch + 1, "mmd": float(mmd.detach()), "reward": float(np.mean(rewards)) if rewards else None}
            attrs = problem.attributes(epoch, epoch == cfg.epochs - 1)
            if attrs is not None:
                row["attributes"] = attrs
            history.append(row)
            advance(1, mmd=row["mmd"], reward=row["reward"] if rewards else "-")
    return history


def fit_with_restarts(make_problem: Callable[[], Problem], cfg: TrainerConfig, show_progress: bool = True
                      ) -> tuple[Problem, list[dict], list[dict]]:
    """Escape symmetric minima: `cfg.restarts` copies of the problem start spread evenly over a turn of
    every periodic attribute (0, 1/K, 2/K ... of 360 degrees), each trains `restart_epochs` with the MMD
    alone, and the one with the best task score (or lowest MMD, `select_by`) continues with `fit` and
    the full config. Nothing here knows the target: only the problem's own score of each start.
    Returns (the chosen problem, its history, one row per start)."""
    if cfg.restarts == 1:
        problem = make_problem()
        return problem, fit(problem, cfg, show_progress), []
    short = cfg.model_copy(update={"loss": "mmd", "epochs": cfg.restart_epochs})
    starts, rows = [], []
    for k in range(cfg.restarts):
        problem = make_problem()
        problem.turn_periodic(k / cfg.restarts)
        history = fit(problem, short, show_progress=False)
        row = {"start_turn": k / cfg.restarts, "mmd": history[-1]["mmd"],
               "attributes": problem.attributes(cfg.restart_epochs - 1, True)}
        if cfg.select_by == "task":
            row["task_score"] = problem.task_score()
        starts.append(problem)
        rows.append(row)
    best = (max(range(len(rows)), key=lambda i: rows[i]["task_score"]) if cfg.select_by == "task"
            else min(range(len(rows)), key=lambda i: rows[i]["mmd"]))
    rows[best]["chosen"] = True
    return starts[best], fit(starts[best], cfg, show_progress), rows


def plot_curves(history: list[dict], path: str | Path, keys: list[str], targets: dict[str, float] | None = None,
                reward_label: str = "reward") -> None:
    """MMD, reward and the trajectory of each attribute in `keys` (dashed: the target's value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 + len(keys), figsize=(4 * (2 + len(keys)), 3.2))
    axes[0].plot([h["epoch"] for h in history], [h["mmd"] for h in history])
    axes[0].set_title("MMD$^2$ (features)")
    axes[0].set_yscale("log")
    task = [h for h in history if h["reward"] is not None]
    axes[1].plot([h["epoch"] for h in task], [h["reward"] for h in task], ".-" if len(task) < 40 else "-")
    axes[1].set_title(reward_label if task else "no task term (loss: mmd)")
    read = [h for h in history if "attributes" in h]
    for ax, key in zip(axes[2:], keys, strict=True):
        ax.plot([h["epoch"] for h in read], [h["attributes"][key] for h in read], label="learned")
        if targets and key in targets:
            ax.axhline(targets[key], color="k", ls="--", lw=0.8, label="target")
            ax.legend()
        ax.set_title(f"mean {key}")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_run(out: str | Path, checkpoint: dict, report: dict, history: list[dict], force: bool,
             pictures: Callable[[Path], None]) -> Path:
    """A run directory, written atomically: generator.pt, report.json, history.json, and what
    `pictures(tmp_dir)` draws (curves, sample grids)."""
    from datarena.data.checksums import atomic_directory, write_json

    with atomic_directory(out, force=force) as tmp:
        torch.save(checkpoint, tmp / "generator.pt")
        write_json(tmp / "report.json", report)
        write_json(tmp / "history.json", history)
        pictures(tmp)
    return Path(out)
