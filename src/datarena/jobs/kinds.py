"""Job kinds: what a job runs (a function of a lower layer), on which queue, for how long at most.

A kind's function is named by import path and imported in the worker when the job runs, so
a worker only loads torch (or diffusers) for the kinds that need it. Every function has the
signature `fn(payload: dict, ctx: JobContext) -> dict` (the result, JSON).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from datarena.errors import ConfigError

QUEUES = ("cpu", "gpu")


@dataclass(frozen=True)
class JobKind:
    name: str
    func: str  # "module:function"
    queue: str
    time_limit_s: float
    description: str

    def load(self) -> Callable:
        module, _, name = self.func.partition(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.queue not in QUEUES:
        raise ConfigError(f"job kind {kind.name}: queue must be one of {', '.join(QUEUES)}, got {kind.queue!r}.")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    if name not in KINDS:
        raise ConfigError(f"unknown job kind {name!r}; kinds are {', '.join(sorted(KINDS))}.")
    return KINDS[name]


for _kind in (
    JobKind("score_dataset", "datarena.jobs.builtin:score_dataset_job", "cpu", 6 * 3600,
            "train the fixed DeepLabv3 on a dataset under a budget and score it on a test set "
            "(also used to re-run a submission for verification)"),
    JobKind("verify_dataset", "datarena.jobs.builtin:verify_dataset_job", "cpu", 6 * 3600,
            "re-run a dataset submission's scoring (and regenerate it when datarena made it) and compare"),
    JobKind("render_scenes", "datarena.jobs.builtin:render_scenes_job", "cpu", 3600,
            "render a shard of a scene grammar to a VOC or npy dataset"),
    JobKind("diffuse_shard", "datarena.jobs.builtin:diffuse_shard_job", "gpu", 12 * 3600,
            "generate a shard of Stable Diffusion image+mask pairs"),
    JobKind("sleep", "datarena.jobs.builtin:sleep_job", "cpu", 600,
            "diagnostic: sleep with progress, optionally fail; appends to a marker file each run"),
    JobKind("noop", "datarena.jobs.builtin:noop_job", "cpu", 60, "diagnostic: return the payload"),
):
    register(_kind)
