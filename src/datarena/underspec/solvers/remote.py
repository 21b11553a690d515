"""Solve a challenge server's exercises through its API, several at once, one process each.

    python -m datarena.underspec.solvers.remote --server URL --team NAME --exercise 01 --out DIR
        (password in DATARENA_PASSWORD) prints one JSON line: the decision, the score if submitted.

`solve_in_processes` runs one such process per exercise, at most `processes` at a time, each
with one torch thread: the small networks of a solve use a second thread poorly, so two
single-thread solves on 2 cores finish sooner than two 2-thread solves one after the other
(the demo's labels round; docs/benchmarks.md). A solve's result does not depend on the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datarena.errors import DatarenaError


def solve_over_http(url: str, team: str, password: str, exercise_id: str, out: Path, solver: str = "divdis",
                    restarts: int = 4, seed: int = 0) -> dict:
    """Download one exercise, reveal at most 5 labels through the API, submit when the solver
    recommends it. Returns what the demo's table shows."""
    from datarena.client import ArenaClient, ServerOracle
    from datarena.data.bundle import read_bundle
    from datarena.underspec.solvers import TrainConfig, solve

    with ArenaClient(url, team, password) as client:
        bundle = read_bundle(client.download(exercise_id, out / "downloads"), hidden=False)
        oracle = ServerOracle(client, exercise_id)
        result = solve(bundle, solver, oracle, seed=seed, config=TrainConfig(restarts=restarts),
                       out_dir=out / "saliency")
        got = client.submit(exercise_id, result.labels) if result.recommend_submit else None
    return {"id": exercise_id, "reveals": len(oracle.revealed), "estimated_accuracy": result.estimated_accuracy,
            "p_beats_default": result.p_beats_default, "submitted": got is not None,
            "accuracy": None if got is None else got["accuracy"], "default_score": result.default_score,
            "seconds": result.seconds}


def solve_in_processes(url: str, team: str, password: str, exercise_ids: list[str], out: Path,
                       solver: str = "divdis", restarts: int = 4, seed: int = 0, processes: int | None = None,
                       on_done=None) -> list[dict]:
    """`solve_over_http` for every exercise, each in its own one-thread process, at most
    `processes` at once (default: the cores). `on_done(row)` is called as each one finishes.
    Returns the rows in the order of `exercise_ids`."""
    processes = max(1, processes or os.cpu_count() or 1)
    env = {**os.environ, "DATARENA_PASSWORD": password, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(exercise_id: str) -> dict:
        cmd = [sys.executable, "-m", "datarena.underspec.solvers.remote", "--server", url, "--team", team,
               "--exercise", str(exercise_id), "--out", str(out), "--solver", solver,
               "--restarts", str(restarts), "--seed", str(seed)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise DatarenaError(f"solving exercise {exercise_id} failed (exit {done.returncode}): "
                                f"{done.stderr.strip()[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if on_done is not None:
            on_done(row)
        return row

    with ThreadPoolExecutor(max_workers=min(processes, max(1, len(exercise_ids)))) as pool:
        return list(pool.map(one, exercise_ids))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--team", required=True)
    ap.add_argument("--exercise", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--solver", default="divdis")
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    password = os.environ.get("DATARENA_PASSWORD")
    if not password:
        raise SystemExit("set DATARENA_PASSWORD to the team's password")
    import torch

    torch.set_num_threads(1)
    row = solve_over_http(args.server, args.team, password, args.exercise, args.out, args.solver,
                          args.restarts, args.seed)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
