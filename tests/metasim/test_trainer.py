"""The one Meta-Sim loop (`metasim.trainer.fit`) on a problem built here: it knows no pair."""

from __future__ import annotations

import numpy as np
import torch

from datarena.metasim.trainer import Problem, TrainerConfig, fit, plot_curves


class Shift(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(1))


class ToyProblem(Problem):
    """One attribute: the MMD pulls it to `pull`, the reward peaks at `peak`."""

    title = "toy"

    def __init__(self, pull: float, peak: float):
        self.generator, self.pull, self.peak, self.rewards = Shift(), pull, peak, []

    def mmd(self, epoch):
        return (self.generator.mu - self.pull).pow(2).sum()

    def candidate(self, epoch, pair, explore):
        mean = self.generator.mu * torch.ones(4)
        delta = torch.full((4,), float(explore.normal(0.0, 0.5)))
        return None, mean, delta, lambda sample: -((sample - mean).mean() ** 2) / (2 * 0.5**2)

    def reward(self, scenes, sample, seed):
        self.rewards.append(seed)
        return -float((sample.mean() - self.peak) ** 2)

    def attributes(self, epoch, last):
        return {"mu": float(self.generator.mu.detach())}


def test_the_mmd_term_alone_goes_where_the_mmd_pulls():
    p = ToyProblem(pull=2.0, peak=-3.0)
    history = fit(p, TrainerConfig(epochs=150, loss="mmd", lr=0.1), show_progress=False)
    assert abs(history[-1]["attributes"]["mu"] - 2.0) < 0.05 and p.rewards == []
    assert all(h["reward"] is None for h in history)


def test_the_task_term_alone_follows_the_reward_every_task_every_epochs():
    p = ToyProblem(pull=2.0, peak=-3.0)
    history = fit(p, TrainerConfig(epochs=200, loss="task", lr=0.2, pairs=2, task_every=2), show_progress=False)
    assert abs(history[-1]["attributes"]["mu"] + 3.0) < 0.5, history[-1]
    assert len(p.rewards) == 100 * 2 * 2  # 100 task steps, 2 antithetic pairs of 2
    assert [h["reward"] is None for h in history[:4]] == [False, True, False, True]


def test_plot_curves_draws_any_problem(tmp_path):
    p = ToyProblem(pull=1.0, peak=1.0)
    history = fit(p, TrainerConfig(epochs=5, loss="both"), show_progress=False)
    plot_curves(history, tmp_path / "c.png", ["mu"], {"mu": 1.0})
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert np.isfinite([h["mmd"] for h in history]).all()


class MirrorProblem(Problem):
    """A periodic attribute theta whose MMD has two equal minima, theta* and its mirror theta* + 180 deg
    (what a 6 and a turned 9 do to image features); only the task score tells them apart."""

    title = "mirror"

    def __init__(self, target_deg: float):
        self.generator, self.target = Shift(), float(np.deg2rad(target_deg))

    def mmd(self, epoch):
        return 1.0 - torch.cos(2.0 * (self.generator.mu - self.target)).sum()

    def candidate(self, epoch, pair, explore):
        raise AssertionError("the restarts train with the MMD alone")

    def reward(self, scenes, sample, seed):
        raise AssertionError("the restarts train with the MMD alone")

    def attributes(self, epoch, last):
        return {"theta": float(np.rad2deg(float(self.generator.mu.detach()))) % 360.0}

    def turn_periodic(self, fraction):
        with torch.no_grad():
            self.generator.mu += 2.0 * np.pi * fraction

    def task_score(self):
        return float(torch.cos(self.generator.mu.detach() - self.target))


def test_restarts_chosen_by_the_task_score_escape_the_mirror_minimum():
    from datarena.metasim.trainer import fit_with_restarts

    # from 0 deg the MMD alone slides into the mirror minimum at 20 deg, not the target at 200 deg
    alone = MirrorProblem(200.0)
    fit(alone, TrainerConfig(epochs=60, loss="mmd", lr=0.05), show_progress=False)
    assert abs(alone.attributes(0, True)["theta"] - 20.0) < 2.0
    cfg = TrainerConfig(epochs=60, loss="mmd", lr=0.05, restarts=4, restart_epochs=30)
    chosen, history, rows = fit_with_restarts(lambda: MirrorProblem(200.0), cfg, show_progress=False)
    assert abs(history[-1]["attributes"]["theta"] - 200.0) < 2.0, rows
    assert [r["start_turn"] for r in rows] == [0.0, 0.25, 0.5, 0.75] and sum(r.get("chosen", False) for r in rows) == 1
    # the MMD cannot choose: the right start and its mirror end at the same (zero) MMD
    ends = sorted(rows, key=lambda r: r["mmd"])
    assert abs(ends[0]["mmd"] - ends[1]["mmd"]) < 1e-3
    assert all(abs((r["attributes"]["theta"] - 20.0 + 90.0) % 180.0 - 90.0) < 5.0 for r in ends[:2]), ends
