"""What a participant runs against a server: verify a phase, submit a dataset, solve an exercise."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.common import (
    CIFAR_DIR,
    FACES_DIR,
    MNIST_DIR,
    _sources,
    app,
    console,
)
from datarena.errors import DatarenaError


@app.command("verify-phase")
def verify_phase_cmd(
    url: str = typer.Argument(..., help="The challenge server, e.g. http://127.0.0.1:8000"),
    phase: int = typer.Option(..., "--phase", help="Phase id whose secret was revealed."),
    downloads: Path = typer.Option(None, "--downloads", help="Your downloads (DIR/<id>_<name>/...) to check too."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Keep the regenerated phase here (default: a temporary directory)."),
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Regenerate a closed phase from its revealed secret; check the commitment, files and hidden labels."""
    from datarena.client.verify import fetch_verification, verify_phase

    info = fetch_verification(url, phase)
    report = verify_phase(info, work_dir, downloads, _sources(mnist_dir, cifar_dir, faces_dir), progress=True)
    mark = lambda ok: "[green]ok[/]" if ok else ("-" if ok is None else "[red]MISMATCH[/]")  # noqa: E731
    console.print(f"{report.phase}: commitment {report.commitment} {mark(report.commitment_ok)}")
    table = Table("exercise", "public files", "hidden labels", "your downloads", "problems")
    for e in report.exercises:
        table.add_row(e.dirname, mark(e.public_ok), mark(e.hidden_ok), mark(e.downloads_ok), "; ".join(e.problems))
    console.print(table)
    if not report.ok:
        raise DatarenaError(f"{report.phase} does not match its revealed secret.")
    console.print(f"[green]{report.phase} verified[/]: the revealed secret regenerates every file and hidden label.")




@app.command("submit-dataset")
def submit_dataset_cmd(
    path: Path = typer.Argument(..., help="A VOC-layout directory, or an .npz / .zip / .tar file."),
    server: str = typer.Option(..., "--server", help="Challenge server URL."),
    team: str = typer.Option(..., "--team"),
    password: str = typer.Option(..., "--password", envvar="DATARENA_PASSWORD"),
    track: str = typer.Option(..., "--track", help="Dataset track id (see GET /api/tracks)."),
    seed: str = typer.Option(None, "--seed", help="The seed that generated the dataset."),
    checksum: str = typer.Option(None, "--checksum", help="sha256 of the model you trained on it (`datarena evaluate checksum`)."),
    method: str = typer.Option(None, "--method", help="Free text: how the dataset was made."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the score, showing the scoring job's progress."),
) -> None:
    """Upload a dataset to a dataset track (it is validated, then scored by the organisers' fixed training)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from datarena.client import ArenaClient, ArenaError

    if not path.exists():
        raise DatarenaError(f"{path} does not exist.")
    client = ArenaClient(server, team, password)
    with Progress("[bold]uploading", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        task = bar.add_task("upload", total=None)
        try:
            res = client.submit_dataset(track, path, seed, checksum, method,
                                        progress=lambda sent, total: bar.update(task, completed=sent, total=total))
        except ArenaError as err:
            raise DatarenaError(str(err)) from None
    console.print(f"submission {res['submission_id']} accepted ({res['n_pairs']} pairs, sha256 {res['sha256'][:16]}…); "
                  f"scoring job {res['job_id']}")
    if not wait:
        return
    with Progress("[bold]scoring", BarColumn(), "{task.completed}/{task.total} {task.fields[msg]}", console=console) as bar:
        task = bar.add_task("score", total=None, msg="queued")

        def show(job: dict) -> None:
            p = job["progress"]
            bar.update(task, completed=p["step"] or 0, total=p["total"],
                       msg=f"{job['state']} {p['message'] or ''}" + (f" ETA {p['eta_s']:.0f}s" if p["eta_s"] else ""))

        job = client.wait_for_job(res["job_id"], on_update=show)
    if job["state"] != "finished":
        raise DatarenaError(f"scoring {job['state']}: {job['error']}")
    r = job["result"]
    console.print(f"mIoU {r['miou']:.4f}  (model sha256 {r['model_sha256']})")


@app.command("solve")
def solve_cmd(
    exercise: str = typer.Argument(..., help="Exercise directory (DIR/public/<id>_<name>), or an exercise id with --server."),
    solver: str = typer.Option("divdis", help="erm, divdis or dbat."),
    oracle: str = typer.Option("local", help="local: reveal from the private labels beside the exercise (research)."),
    server: str = typer.Option(None, "--server", help="Challenge server URL: reveal through its API."),
    team: str = typer.Option(None, "--team", help="Team name on the server."),
    password: str = typer.Option(None, "--password", envvar="DATARENA_PASSWORD", help="Team password."),
    submit: bool = typer.Option(False, "--submit", help="With --server: submit if the solver recommends it."),
    seed: int = typer.Option(0, help="Training seed."),
    out: Path = typer.Option(Path("solve-out"), "--out", help="Where labels, report and saliency PNG go."),
) -> None:
    """Solve one exercise with at most 5 revealed labels; write labels.csv and a saliency PNG."""
    from datarena.data.bundle import read_bundle
    from datarena.underspec.solvers import LocalOracle
    from datarena.underspec.solvers.report import solve_and_report

    submit_fn = None
    if server:
        from datarena.client import ArenaClient, ServerOracle

        if not team or not password:
            raise DatarenaError("--server needs --team and --password (or DATARENA_PASSWORD).")
        client = ArenaClient(server, team, password)
        bundle = read_bundle(client.download(exercise, out / "downloads"), hidden=False)
        the_oracle = ServerOracle(client, exercise)
        if submit:
            def submit_fn(labels):
                return client.submit(exercise, labels)
    else:
        if oracle != "local":
            raise DatarenaError(f"unknown oracle {oracle!r}; use --oracle local or --server URL.")
        bundle = read_bundle(exercise)
        the_oracle = LocalOracle(bundle.y_target)
    done = solve_and_report(bundle, solver, the_oracle, out, seed=seed, submit=submit_fn)
    r = done.result
    console.print(f"{bundle.dirname} {solver}: {len(r.reveals)} reveals, estimated accuracy "
                  f"{r.estimated_accuracy:.3f}, P(accuracy >= default {r.default_score:g}) "
                  f"{r.p_beats_default:.2f} -> {done.verdict()}; {r.seconds:.1f}s")
    if "score" in done.report:
        s = done.report["score"]
        console.print(f"  true target accuracy {s['accuracy']:.3f}, worst group {s['worst_group_accuracy']:.3f}")
    console.print(f"  labels: {done.labels_path}\n  saliency: {r.saliency_png}")
