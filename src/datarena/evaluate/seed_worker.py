"""One training seed of a multi-seed CPU score, in a process of its own (started by
`datarena.evaluate.parallel`): `python -m datarena.evaluate.seed_worker ARGS_JSON K`.

It trains and scores seed `seed + K`, saves its per-image confusions (seed_confusions.npy) and
reports (seed_result.json) in its directory, and tells the parent how far it is on stdout, in
lines that start with `parallel.MARK`.
"""

from __future__ import annotations

import os
import sys


def _die_with_parent() -> bool:
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG), before anything
    slow is imported. A watch thread alone was not enough: loading torch's shared libraries holds the
    interpreter lock, and on a slow, loaded machine a seed whose parent was SIGKILLed meanwhile lived
    on for over 15 s (two clean-clone runs). The kernel's signal needs no thread of ours to run.
    Returns whether the request is in place (False: not Linux, or no prctl)."""
    parent = os.environ.get(PARENT_ENV)
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != int(parent):
        os._exit(3)  # the parent died before the request was in place
    return armed


PARENT_ENV = "DATARENA_SEED_PARENT"
# started as a seed process: armed before the imports below; otherwise main() watches the parent
_KERNEL_WATCHES = _die_with_parent() if __name__ == "__main__" else False

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from datarena.errors import DatarenaError  # noqa: E402
from datarena.evaluate.parallel import MARK, seed_dir  # noqa: E402


def _say(**msg) -> None:
    print(MARK + json.dumps(msg), flush=True)


def main(args: dict, k: int) -> None:
    """One seed, in a process of its own: train, score on the test set, save the per-image confusions
    (seed_confusions.npy) and the reports (seed_result.json) in its directory."""
    if not _KERNEL_WATCHES:  # no prctl (not Linux): a thread watches the parent, from before torch's import
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
