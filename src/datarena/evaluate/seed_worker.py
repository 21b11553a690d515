"""One training seed of a multi-seed CPU score, in a process of its own (started by
`datarena.evaluate.parallel`): `python -m datarena.evaluate.seed_worker ARGS_JSON K`.

It trains and scores seed `seed + K`, saves its per-image confusions (seed_confusions.npy) and
reports (seed_result.json) in its directory, and tells the parent how far it is on stdout, in
lines that start with `parallel.MARK`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from datarena.errors import DatarenaError
from datarena.evaluate.parallel import MARK, seed_dir


def _say(**msg) -> None:
    print(MARK + json.dumps(msg), flush=True)


def main(args: dict, k: int) -> None:
    """One seed, in a process of its own: train, score on the test set, save the per-image confusions
    (seed_confusions.npy) and the reports (seed_result.json) in its directory."""
    # the watch starts before torch is imported: on a slow, loaded machine the import alone took
    # over 15 s, and a seed whose parent was killed meanwhile lived on that long (a clean-clone run)
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    import torch

    torch.set_num_threads(1)
    try:
        from datarena.evaluate.train import Budget, train_and_score_seed

        budget = Budget.model_validate(args["budget"])
        out = seed_dir(Path(args["out"]), k)
        last = [0.0]

        def progress(it: int, total: int, info: dict) -> None:
            now = time.monotonic()
            if it == total or now - last[0] >= 0.25:
                last[0] = now
                _say(it=it, loss=float(info["loss"]), img_s=float(info["img_s"]))

        # the parent validated the dataset and, for a resume, checked the first seed's checkpoint
        trained, scored, confusions = train_and_score_seed(
            args["dataset"], args["test"], budget, k, args["out"], bool(args["resume"]), args["backbone_weights"],
            "cpu", "skip", False, progress, args["overlays_from"])
        np.save(out / "seed_confusions.npy", confusions)
        (out / "seed_result.json").write_text(json.dumps({"trained": trained, "scored": scored}))
        _say(done=True)
    except Exception as exc:  # reported to the parent, which raises it there
        _say(error=str(exc), kind=type(exc).__name__, domain=isinstance(exc, DatarenaError))


def _end_with_parent(parent: int) -> None:
    """A seed whose parent died (a worker killed with SIGKILL) stops too, instead of training on as
    an orphan beside the re-run that resumes it."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), int(sys.argv[2]))
