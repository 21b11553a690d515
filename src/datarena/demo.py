"""The main job on the embedded default data (`make demo`).

Generate the suite, start the challenge server, register and validate a team, solve every
exercise through HTTP with at most 5 reveals each, submit where the solver recommends it,
and print the leaderboard and its URL.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEMO_SERVER_SECRET = hashlib.sha256(b"datarena demo server secret (published: not for real challenges)").hexdigest()


def run_demo(out: Path, seed: int = 42, console: Console | None = None, linger: float = 0.0,
             solver: str = "divdis", restarts: int = 2) -> dict:
    from datarena.data.bundle import read_bundle
    from datarena.server.arena import Arena
    from datarena.server.client import ArenaClient, ServerOracle
    from datarena.server.config import ChallengeSpec
    from datarena.server.runner import BackgroundServer
    from datarena.underspec.solvers import TrainConfig, solve

    console = console or Console()
    t_start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    # A real server draws its secret at random; the demo publishes a fixed one so that every
    # `make demo` serves the same data (and shows how a revealed secret verifies a phase).
    data_dir.mkdir(parents=True)
    (data_dir / "server-secret").write_text(DEMO_SERVER_SECRET + "\n")
    (data_dir / "server-secret").chmod(0o600)
    console.rule(f"1. generating the hackathon42 suite (phase seed {seed}, the demo's published server secret) "
                 f"and starting the challenge server")
    arena = Arena(ChallengeSpec(title="hackathon42 demo", data_dir=str(data_dir),
                                phases=[{"name": "phase 1", "seed": seed}]))
    phase = arena.start(progress=True)
    with BackgroundServer(arena) as url:
        console.print(f"server at {url}; database {arena.url}; data {phase.data_dir}")
        console.rule("2. registering team 'demo_team'; the organiser validates it")
        client = ArenaClient(url, "demo_team", "demo password 42")
        client.register()
        arena.validate_team("demo_team")
        exercises = client.exercises()
        console.rule(f"3. solving {len(exercises)} exercises through HTTP with {solver} (at most 5 reveals each)")
        table = Table("exercise", "reveals", "estimated acc", "P(>= default)", "decision", "score", "seconds")
        for ex in exercises:
            bundle = read_bundle(client.download(ex["id"], out / "downloads"), hidden=False)
            oracle = ServerOracle(client, ex["id"])
            result = solve(bundle, solver, oracle, seed=0, config=TrainConfig(restarts=restarts),
                           out_dir=out / "saliency")
            if result.recommend_submit:
                got = client.submit(ex["id"], result.labels)
                decision, shown = "submit", f"{got['accuracy']:.3f}"
            else:
                decision, shown = "abstain", f"{ex['default_score']:.3f} (default)"
            table.add_row(f"{ex['id']} {ex['name']}", str(len(oracle.revealed)), f"{result.estimated_accuracy:.3f}",
                          f"{result.p_beats_default:.2f}", decision, shown, f"{result.seconds:.1f}")
            console.print(f"  {ex['id']} {ex['name']}: {decision}, {len(oracle.revealed)} reveals, {result.seconds:.1f}s")
        console.print(table)
        console.rule("4. leaderboard")
        board = client.leaderboard()
        lb = Table("rank", "team", "total", f"of max {board['max_total']:g}")
        for r in board["rows"]:
            lb.add_row(str(r["rank"]), r["team"], f"{r['total']:.3f}", "")
        console.print(lb)
        console.print(f"leaderboard page: {url}/  (saliency maps in {out / 'saliency'})")
        console.print(f"demo finished in {time.perf_counter() - t_start:.0f} s. To browse it again: "
                      f"datarena serve --data-dir {data_dir}")
        if linger > 0:
            time.sleep(linger)
    return board
