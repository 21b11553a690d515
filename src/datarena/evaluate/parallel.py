"""The training seeds of one CPU score, side by side: each seed trains in its own process, one thread each.

Why processes: at CPU scale (the `aerial_scenes` preset: 64 px crops, batch 8) intra-op threads
keep two cores about half busy, so three seeds one after another on two threads cost more than
three single-thread processes sharing the cores (docs/benchmarks.md, "Seeds side by side").
Why one thread: a CPU model's checksum depends on its thread count (float sums in another order);
with one thread a seed's model is the same whatever the machine's core count and however many
seeds ran beside it, so a re-run reproduces it bit for bit.

`DATARENA_SEED_PROCESSES` caps how many seeds run at once (default: all of them, at most twice
the cores); it changes the wall time, never a result.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from datarena.errors import ConfigError

ENV = "DATARENA_SEED_PROCESSES"


def seed_processes(seeds: int) -> int:
    """How many of `seeds` seeds train at once."""
    raw = os.environ.get(ENV)
    if raw:
        try:
            cap = int(raw)
        except ValueError:
            raise ConfigError(f"{ENV}={raw!r} is not a whole number; set it to how many seeds may train at once "
                              f"(1 or more).") from None
        if cap < 1:
            raise ConfigError(f"{ENV}={raw!r}: set it to 1 or more.")
    else:
        cap = 2 * (os.cpu_count() or 1)
    return max(1, min(seeds, cap))


def seed_dir(out: Path, k: int) -> Path:
    """Where seed k writes its model, checkpoint and report: OUT for the first, OUT/seeds/K for the others."""
    return out if k == 0 else out / "seeds" / str(k)


MARK = "datarena-seed "  # the prefix of the lines a seed process reports on; other output is ignored


class _Seed:
    """A running seed process and the thread that forwards its report lines."""

    def __init__(self, k: int, args: dict, log: Path, lines: queue_mod.Queue):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DATARENA_SEED_PARENT": str(os.getpid())}
        self.k, self.log = k, log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "datarena.evaluate.seed_worker", json.dumps(args), str(k)],
                                         stdout=subprocess.PIPE, stderr=err, env=env)
        self.thread = threading.Thread(target=self._forward, args=(lines,), daemon=True)
        self.thread.start()

    def _forward(self, lines: queue_mod.Queue) -> None:
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace")
            if text.startswith(MARK):
                lines.put((self.k, json.loads(text[len(MARK):])))
        lines.put((self.k, {"exit": self.proc.wait()}))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def train_seeds_in_processes(dataset_path: str | Path, test_path: str | Path, budget, out: str | Path,
                             resume: bool, backbone_weights: str | Path | None, show_progress: bool,
                             on_progress: Callable[[int, int, dict], None] | None,
                             overlays_from: str) -> list[tuple[dict, dict, np.ndarray]]:
    """Train and score seeds seed, seed + 1, ... of `budget` (budget.seeds of them), each in a
    process of its own (`python -m datarena.evaluate.seed_worker`: nothing of the caller's main
    module is imported again, so a plain script needs no `if __name__ == "__main__"`).

    Returns, per seed: its training report, its test scores and its (n_images, C, C) confusions.
    `on_progress(done, total, stats)` counts the iterations of all seeds together; when it raises
    (a job told to stop), every seed process is ended and the exception goes on; each seed's last
    checkpoint stays for a resume."""
    from datarena.progress import progress_bar

    out = Path(out)
    seeds = budget.seeds
    args = {"dataset": str(dataset_path), "test": str(test_path), "budget": budget.model_dump(mode="json"),
            "out": str(out), "resume": resume, "backbone_weights": str(backbone_weights) if backbone_weights else None,
            "overlays_from": overlays_from}
    lines: queue_mod.Queue = queue_mod.Queue()
    pending = list(range(seeds))
    running: dict[int, _Seed] = {}
    finished: set[int] = set()
    done = [0] * seeds
    rates = [0.0] * seeds
    total = budget.iterations * seeds
    at_once = seed_processes(seeds)
    try:
        with progress_bar(f"training deeplabv3-{budget.backbone}, {seeds} seeds ({at_once} at once)", total=total,
                          unit="it", enabled=show_progress) as advance:
            while pending or running:
                while pending and len(running) < at_once:
                    k = pending.pop(0)
                    seed_dir(out, k).mkdir(parents=True, exist_ok=True)
                    running[k] = _Seed(k, args, seed_dir(out, k) / "seed.log", lines)
                k, msg = lines.get()
                if "it" in msg:
                    step, done[k] = msg["it"] - done[k], msg["it"]
                    rates[k] = msg["img_s"]
                    stats = {"loss": msg["loss"], "img_s": sum(rates)}
                    advance(step, **stats)
                    if on_progress is not None:
                        on_progress(sum(done), total, stats)
                elif "done" in msg:
                    finished.add(k)
                    rates[k] = 0.0
                elif "error" in msg:
                    if msg["domain"]:  # what the caller can fix (a dataset, a test set, a setting)
                        raise ConfigError(f"training seed {budget.seed + k}: {msg['error']}")
                    raise RuntimeError(f"training seed {budget.seed + k} failed: {msg['kind']}: {msg['error']} "
                                       f"(its log: {running[k].log})")
                elif "exit" in msg:
                    running.pop(k).thread.join()
                    if k not in finished:
                        raise RuntimeError(f"training seed {budget.seed + k} ended with exit code {msg['exit']} "
                                           f"(killed? out of memory?); its log: {seed_dir(out, k) / 'seed.log'}; "
                                           f"a re-run resumes from its last checkpoint.")
    finally:
        for seed in running.values():
            seed.stop()
    results = []
    for k in range(seeds):
        got = json.loads((seed_dir(out, k) / "seed_result.json").read_text())
        results.append((got["trained"], got["scored"], np.load(seed_dir(out, k) / "seed_confusions.npy")))
    return results

