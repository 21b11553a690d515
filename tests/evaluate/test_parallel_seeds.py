"""The seeds of a CPU score train side by side in processes of one thread: same models as one at a
time, a stopped score resumes seed by seed, and a failing seed is an error, not a hang."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from datarena.evaluate.train import budget_from, score_dataset


@pytest.fixture
def tiny(tmp_path):
    from datarena.data.segmentation import SegmentationSet, write_npz

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    masks = (images[..., 0] > 128).astype(np.uint8)
    write_npz(tmp_path / "d.npz", SegmentationSet(images, masks, ("background", "bright")))
    return tmp_path / "d.npz"


def _budget(**kw):
    return budget_from("digit_scenes", iterations=4, batch_size=4, crop_size=32, num_classes=2, pretrained="none",
                       class_weights="uniform", image_size=(32, 32), checkpoint_every=2, **kw)


def test_side_by_side_seeds_give_the_models_of_one_thread_runs_one_at_a_time(tiny, tmp_path, monkeypatch):
    both = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "both", show_progress=False)
    monkeypatch.setenv("DATARENA_SEED_PROCESSES", "1")
    queued = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "queued", show_progress=False)
    assert queued["model_sha256_seeds"] == both["model_sha256_seeds"] and queued["seed_mious"] == both["seed_mious"]
    # each seed is the model a one-thread, one-seed run of that seed trains in this process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = [score_dataset(tiny, tiny, _budget(seed=s), tmp_path / f"alone{s}", show_progress=False)
                 for s in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    assert [a["model_sha256"] for a in alone] == both["model_sha256_seeds"]
    assert [a["miou"] for a in alone] == pytest.approx(both["seed_mious"], abs=0)
    assert both["model_sha256"] == both["model_sha256_seeds"][0] and (tmp_path / "both" / "seeds" / "1" / "model.pt").is_file()


def test_a_resumed_score_restarts_only_the_seeds_it_lacks(tiny, tmp_path):
    """A worker lost before seed 1 had started leaves OUT/checkpoint.pt but no OUT/seeds/1: the re-run
    resumes seed 0 and trains seed 1 from the start (it used to refuse: 'cannot resume')."""
    first = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "out", show_progress=False)
    shutil.rmtree(tmp_path / "out" / "seeds" / "1")
    again = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "out", resume=True, show_progress=False)
    assert again["model_sha256_seeds"] == first["model_sha256_seeds"] and again["miou"] == first["miou"]


def _seed_processes_under(path) -> list[str]:
    from pathlib import Path

    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "datarena.evaluate.seed_worker" in text and str(path) in text:
            found.append(text)
    return found


def test_a_stop_ends_every_seed_process_and_a_resume_finishes_the_score(tiny, tmp_path):
    class Stop(Exception):
        pass

    def stop(done, total, stats):
        raise Stop

    with pytest.raises(Stop):
        score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "out", show_progress=False, on_progress=stop)
    assert not _seed_processes_under(tmp_path / "out")  # no seed left training
    # as the job runner does: resume when the first seed left a checkpoint (the others resume from theirs)
    resume = (tmp_path / "out" / "checkpoint.pt").is_file()
    resumed = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "out", resume=resume, show_progress=False)
    fresh = score_dataset(tiny, tiny, _budget(seeds=2), tmp_path / "fresh", show_progress=False)
    assert resumed["model_sha256_seeds"] == fresh["model_sha256_seeds"]


def test_a_seed_that_fails_is_an_error_that_names_it(tiny, tmp_path):
    """The test set is read in the child after training: a broken one fails every seed, and the
    parent raises instead of waiting."""
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(Exception, match="seed"):
        score_dataset(tiny, bad, _budget(seeds=2), tmp_path / "out", show_progress=False)


def test_resume_without_a_checkpoint_is_refused_side_by_side_as_one_at_a_time(tiny, tmp_path):
    from datarena.errors import ConfigError

    for seeds in (1, 2):
        with pytest.raises(ConfigError, match="cannot resume"):
            score_dataset(tiny, tiny, _budget(seeds=seeds), tmp_path / f"none{seeds}", resume=True, show_progress=False)


def test_the_seed_process_cap_is_checked(monkeypatch):
    from datarena.errors import ConfigError
    from datarena.evaluate.parallel import seed_processes

    monkeypatch.setenv("DATARENA_SEED_PROCESSES", "two")
    with pytest.raises(ConfigError, match="DATARENA_SEED_PROCESSES"):
        seed_processes(3)
    monkeypatch.setenv("DATARENA_SEED_PROCESSES", "2")
    assert seed_processes(3) == 2 and seed_processes(1) == 1


def test_seed_processes_end_when_their_parent_is_killed(tiny, tmp_path):
    """A worker killed with SIGKILL leaves no seed training on as an orphan beside the re-run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (f"from datarena.evaluate.train import budget_from, score_dataset\n"
              f"b = budget_from('digit_scenes', iterations=100000, batch_size=4, crop_size=32, num_classes=2, "
              f"pretrained='none', class_weights='uniform', image_size=(32, 32), seeds=2)\n"
              f"score_dataset({str(tiny)!r}, {str(tiny)!r}, b, {str(tmp_path / 'out')!r}, show_progress=False)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(_seed_processes_under(tmp_path / "out")) < 2:
            assert time.monotonic() < deadline and parent.poll() is None, "the seed processes never started"
            time.sleep(0.2)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 15
    while _seed_processes_under(tmp_path / "out"):
        assert time.monotonic() < deadline, "a seed process outlived its killed parent"
        time.sleep(0.2)


def _child_of_killed_parent_lives(child_code: str) -> bool:
    """Start `child_code` under a parent, SIGKILL the parent, and say whether the child is alive 5 s later."""
    import os
    import signal
    import subprocess
    import sys
    import time

    parent_code = ("import os, subprocess, sys\n"
                   f"p = subprocess.Popen([sys.executable, '-c', {child_code!r}], "
                   "env={**os.environ, 'DATARENA_SEED_PARENT': str(os.getpid())})\n"
                   "print(p.pid, flush=True)\np.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.5)  # the child is inside its long call, holding the interpreter lock
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{child}/stat") as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        return False
            except FileNotFoundError:
                return False
            time.sleep(0.1)
        return True
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_seed_holding_the_interpreter_lock_still_ends_with_its_parent():
    """Loading torch's libraries holds the interpreter lock for seconds; a seed whose parent dies then
    must end all the same. `sum(range(...))` holds the lock in one C call, as that import does: the
    watch thread alone (the old way) cannot run, the kernel's parent-death signal ends the seed."""
    blocked = "sum(range(10**12))"
    watch = ("import os, threading\nfrom datarena.evaluate.seed_worker import _end_with_parent\n"
             "threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()\n")
    assert _child_of_killed_parent_lives(watch + blocked), "the old way should not have ended it (test is broken)"
    both = watch + "from datarena.evaluate.seed_worker import _die_with_parent\n_die_with_parent()\n"
    assert not _child_of_killed_parent_lives(both + blocked), "a seed outlived its killed parent"
