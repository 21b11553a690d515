"""The `datarena` command: thin wrappers that parse, call one function, and print."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from datarena.errors import DatarenaError

console = Console(width=None if sys.stdout.isatty() else 140)
app = typer.Typer(
    help="datarena: make datasets, score them, and host data-centric ML challenges.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
generate_app = typer.Typer(help="Generate underspecified exercises (a whole suite or one).", no_args_is_help=True)
app.add_typer(generate_app, name="generate")

MNIST_DIR = typer.Option(None, "--mnist-dir", envvar="DATARENA_MNIST_DIR", help="Directory of the four MNIST IDX files (default: embedded 5k digits).")
CIFAR_DIR = typer.Option(None, "--cifar-dir", envvar="DATARENA_CIFAR10_DIR", help="Directory of the CIFAR-10 python batches (needed by 888).")
FACES_DIR = typer.Option(None, "--faces-dir", envvar="DATARENA_FACES_DIR", help="Face images + list_attr_celeba.txt (default: embedded lfw_subset).")


def _device(name: str) -> str:
    """'auto' -> cuda when torch sees a GPU, else cpu (resolved when a command runs, so that
    `datarena --help` does not import torch)."""
    if name != "auto":
        return name
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sources(mnist_dir, cifar_dir, faces_dir):
    from datarena.underspec.exercises import SourceConfig

    return SourceConfig(
        mnist_dir=str(mnist_dir) if mnist_dir else None,
        cifar_dir=str(cifar_dir) if cifar_dir else None,
        faces_dir=str(faces_dir) if faces_dir else None,
    )


def print_generation(results, out: Path) -> None:
    table = Table(title=f"exercises in {out}")
    for col in ("id", "name", "row shape", "labeled", "unlabeled", "target", "mix", "pts", "default", "status"):
        table.add_column(col, overflow="fold")
    for r in results:
        s = r.spec
        shapes = r.shapes or {}
        count = lambda k, sh=shapes: str(sh[k][0]) if k in sh else "-"  # noqa: E731
        row_shape = "×".join(map(str, shapes["labeled"][1:])) if shapes else "-"
        status = f"ok {r.seconds:.1f}s" if r.status == "ok" else f"[yellow]skipped[/]: {r.reason}"
        table.add_row(s.id, s.name, row_shape, count("labeled"), count("unlabeled"), count("target"), f"{s.mix_rate:g}", f"{s.points:g}", f"{s.default_score:g}", status)
    console.print(table)


@generate_app.command("suite")
def generate_suite_cmd(
    out: Path = typer.Option(..., "--out", help="Output directory (public/ and private/ are written inside)."),
    seed: int = typer.Option(42, help="Master seed; a new seed regenerates every exercise (phase 2)."),
    suite: Path = typer.Option(None, "--suite", help="Suite YAML file (default: the hackathon42 suite)."),
    mix_rate: float = typer.Option(None, "--mix-rate", help="Override every exercise's mix rate."),
    only: list[str] = typer.Option(None, "--only", help="Generate only these exercise ids (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    secret: str = typer.Option(None, "--secret", help="A served phase's revealed secret (64 hex digits) instead of --seed."),
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Generate the whole exercise suite from a seed (or a revealed phase secret)."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    extra = None
    if secret:
        from datarena.server import phases

        seed, extra = phases.generation_seed(secret), {"commitment": phases.commitment(secret)}
    results = generate_suite(load_suite(suite), seed, out, _sources(mnist_dir, cifar_dir, faces_dir), force=force,
                             only=only, mix_rate=mix_rate, public_extra=extra)
    print_generation(results, out)


@generate_app.command("exercise")
def generate_exercise_cmd(
    exercise_id: str = typer.Argument(..., help="Exercise id, e.g. 01 or 456."),
    out: Path = typer.Option(Path("datarena-exercise"), "--out", help="Output directory."),
    seed: int = typer.Option(42, help="Seed (same seed as a suite gives the same arrays)."),
    mix_rate: float = typer.Option(None, "--mix-rate", help="Fraction of conflicting rows in the unlabeled set."),
    suite: Path = typer.Option(None, "--suite", help="Suite YAML file (default: the hackathon42 suite)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Generate one exercise."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    results = generate_suite(load_suite(suite), seed, out, _sources(mnist_dir, cifar_dir, faces_dir), force=force, only=[exercise_id], mix_rate=mix_rate)
    if results[0].status != "ok":
        raise DatarenaError(f"exercise {exercise_id} skipped: {results[0].reason}")
    print_generation(results, out)


admin_app = typer.Typer(help="Organiser commands on a challenge's database.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
CHALLENGE = typer.Option(None, "--challenge", help="Challenge YAML file (default: hackathon42 on the embedded MNIST).")
DATA_DIR = typer.Option(None, "--data-dir", help="Where phase datasets and the SQLite database live.")


def _arena(challenge, data_dir, start: bool = False):
    """The challenge's Arena; start=True also opens the first phase (generating its data) if none exists.

    Organiser commands only migrate the schema: listing teams must not generate datasets.
    """
    from datarena.server.arena import Arena
    from datarena.server.config import load_challenge
    from datarena.server.db import migrate

    arena = Arena(load_challenge(challenge, data_dir=str(data_dir) if data_dir else None))
    if start:
        arena.start()
    else:
        migrate(arena.engine)
    return arena


@app.command("serve")
def serve_cmd(
    challenge: Path = CHALLENGE,
    data_dir: Path = DATA_DIR,
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve a challenge: API, reveal endpoint, leaderboard pages."""
    from datarena.server.runner import serve

    arena = _arena(challenge, data_dir, start=True)
    console.print(f"serving [bold]{arena.spec.title}[/] on http://{host}:{port}  (database {arena.url})")
    serve(arena, host, port)


@admin_app.command("validate-team")
def admin_validate(name: str, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR,
                   revoke: bool = typer.Option(False, "--revoke", help="Withdraw the validation.")) -> None:
    """Validate a registered team so it can reveal and submit."""
    team = _arena(challenge, data_dir).validate_team(name, not revoke)
    console.print(f"team {team.name}: validated={team.validated}")


@admin_app.command("revoke-tokens")
def admin_revoke_tokens(name: str, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """End every token and web session of a team now (its members log in again)."""
    n = _arena(challenge, data_dir).revoke_team_tokens(name)
    console.print(f"team {name}: {n} token(s) and session(s) revoked")


@admin_app.command("list-teams")
def admin_list(challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """List teams, their validation and submission counts."""
    table = Table("team", "validated", "registered", "submissions")
    for t in _arena(challenge, data_dir).list_teams():
        table.add_row(t["name"], "yes" if t["validated"] else "[yellow]no[/]", t["created_at"], str(t["submissions"]))
    console.print(table)


@admin_app.command("export-results")
def admin_export(out: Path = typer.Option(None, "--out", help="CSV file (default: stdout)."),
                 challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """CSV of every submission and its score, all phases."""
    text = _arena(challenge, data_dir).export_results()
    if out:
        out.write_text(text)
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


@admin_app.command("new-phase")
def admin_new_phase(seed: int = typer.Option(..., "--seed", help="Seed of the regenerated exercises."),
                    name: str = typer.Option(None, "--name", help="Phase name (default: phase N)."),
                    challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Regenerate every exercise with a new seed and open a new phase (old results are kept)."""
    arena = _arena(challenge, data_dir)
    phase = arena.open_phase(seed, name)
    console.print(f"opened {phase.name}; commitment {phase.commitment}; data in {phase.data_dir}")


@admin_app.command("reveal-seed")
def admin_reveal_seed(phase: int = typer.Argument(..., help="Phase id (see GET /api/phases)."),
                      challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Publish a closed phase's secret (API, page, export) so anyone can verify its data."""
    p = _arena(challenge, data_dir).reveal_phase_secret(phase)
    console.print(f"{p.name}: secret {p.revealed_secret} (commitment {p.commitment}) is now public.\n"
                  f"Anyone can check the phase: datarena verify-phase SERVER_URL --phase {p.id}")


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
    from datarena.server.verify import fetch_verification, verify_phase

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


@admin_app.command("verify")
def admin_verify(submission: int = typer.Argument(..., help="Dataset submission id (track page, export-results)."),
                 challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Reproduce a dataset submission: re-train (and regenerate a datarena-made dataset) as a job, then compare."""
    job = _arena(challenge, data_dir).verify_submission(submission)
    console.print(f"queued verification job {job.id} for submission {submission}; the server's worker runs it "
                  f"(`datarena admin jobs show {job.id}`); the result shows on the track's leaderboard.")


jobs_app = typer.Typer(help="Organiser commands on the job queue (scoring, verification, generation).", no_args_is_help=True)
admin_app.add_typer(jobs_app, name="jobs")


def _job_row(j) -> list[str]:
    p = j.as_json()
    prog = p["progress"]
    step = f"{prog['step']}/{prog['total']}" if prog["total"] else (str(prog["step"]) if prog["step"] is not None else "-")
    rate = f"{prog['rate']:.1f}/s" if prog["rate"] else ""
    eta = f"{prog['eta_s']:.0f}s" if prog["eta_s"] else ""
    colour = {"finished": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(j.state, "white")
    return [str(j.id), j.kind, j.queue, f"[{colour}]{j.state}[/]", f"{j.attempts}/{j.max_attempts}", j.owner or "",
            step, rate, eta, (j.error or prog["message"] or "")[:60]]


@jobs_app.command("list")
def jobs_list(state: str = typer.Option(None, "--state", help="Only jobs in this state."),
              limit: int = typer.Option(50, "--limit"), challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """The latest jobs with state, attempts, progress, rate and ETA."""
    q = _arena(challenge, data_dir).jobs
    table = Table("id", "kind", "queue", "state", "attempts", "owner", "step", "rate", "eta", "message / reason",
                  title=f"jobs ({q.mode} mode)")
    for j in q.list(state, limit):
        table.add_row(*_job_row(j))
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Everything about one job: payload, lease holder, progress, log tail, result or failure reason."""
    import json

    console.print_json(json.dumps(_arena(challenge, data_dir).jobs.get(job_id).as_json()))


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Cancel a job: a queued one never runs, a running one stops at its next heartbeat."""
    j = _arena(challenge, data_dir).jobs.cancel(job_id)
    console.print(f"job {j.id}: {j.state}{' (stopping at its next heartbeat)' if j.state == 'running' else ''}")


@jobs_app.command("retry")
def jobs_retry(job_id: int, challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Queue a failed or cancelled job again (attempts start from zero)."""
    j = _arena(challenge, data_dir).jobs.retry(job_id)
    console.print(f"job {j.id}: {j.state}")


@jobs_app.command("submit")
def jobs_submit(kind: str = typer.Argument(..., help="score_dataset, render_scenes, diffuse_shard, sleep, noop."),
                payload: str = typer.Option("{}", "--payload", help="The job's payload as JSON."),
                queue: str = typer.Option(None, "--queue", help="cpu or gpu (default: the kind's)."),
                challenge: Path = CHALLENGE, data_dir: Path = DATA_DIR) -> None:
    """Queue an organiser job, e.g. a shard of a dataset to render."""
    import json

    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise DatarenaError(f"--payload is not JSON: {exc}") from None
    j = _arena(challenge, data_dir).jobs.submit(kind, body, owner="organiser", queue=queue)
    console.print(f"queued job {j.id} ({j.kind} on {j.queue}); follow it with `datarena admin jobs show {j.id}`")


@app.command("worker")
def worker_cmd(
    queues: str = typer.Option("cpu", "--queues", help="Comma-separated queues to serve: cpu, gpu."),
    concurrency: int = typer.Option(1, "--concurrency", help="Jobs at once (1 = a solo worker; more = processes)."),
    broker: str = typer.Option(None, "--broker", envvar="DATARENA_BROKER_URL", help="redis://HOST:6379/0 or amqp://USER:PASS@HOST:5672//"),
    database_url: str = typer.Option(None, "--database-url", envvar="DATARENA_DATABASE_URL", help="The challenge database (default: from --challenge)."),
    challenge: Path = CHALLENGE,
    data_dir: Path = DATA_DIR,
    prefix: str = typer.Option(None, "--prefix", envvar="DATARENA_QUEUE_PREFIX", help="Queue name prefix (the challenge's jobs.queue_prefix)."),
    hostname: str = typer.Option(None, "--hostname", help="Celery node name (default: celery@HOST)."),
    lease_s: float = typer.Option(None, "--lease-s", help="Lease of a running job, renewed every third of it (default: the challenge's jobs.lease_s)."),
    republish_after_s: float = typer.Option(None, "--republish-after-s", help="Publish a queued job again after this long unclaimed (a broker that lost messages)."),
) -> None:
    """Run a job worker: takes scoring/generation jobs from the broker, records them in the database."""
    from datarena.jobs.celery_app import run_worker
    from datarena.jobs.kinds import QUEUES
    from datarena.server.config import load_challenge

    spec = load_challenge(challenge, data_dir=str(data_dir) if data_dir else None)
    broker = broker or spec.jobs.broker_url
    if not broker:
        raise DatarenaError("no broker: pass --broker redis://127.0.0.1:6379/0 (or set DATARENA_BROKER_URL). "
                            "Without a broker, `datarena serve` runs jobs itself.")
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        raise DatarenaError(f"--queues must name some of {', '.join(QUEUES)}, got {queues!r}.")
    url = database_url or spec.resolved_database_url()
    console.print(f"worker on {', '.join(wanted)} (concurrency {concurrency}); broker {broker}; database {url}")
    run_worker(broker, url, wanted, concurrency, prefix or spec.jobs.resolved_prefix(), lease_s or spec.jobs.lease_s,
               republish_after_s or spec.jobs.republish_after_s, hostname=hostname)


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

    from datarena.server.client import ArenaClient, ArenaError

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
    import json

    from datarena.data.bundle import read_bundle
    from datarena.underspec import score
    from datarena.underspec.solvers import LocalOracle, solve
    from datarena.underspec.solvers.disambiguate import SUBMIT_CONFIDENCE

    if server:
        from datarena.server.client import ArenaClient, ServerOracle

        if not team or not password:
            raise DatarenaError("--server needs --team and --password (or DATARENA_PASSWORD).")
        client = ArenaClient(server, team, password)
        bundle = read_bundle(client.download(exercise, out / "downloads"), hidden=False)
        the_oracle = ServerOracle(client, exercise)
    else:
        if oracle != "local":
            raise DatarenaError(f"unknown oracle {oracle!r}; use --oracle local or --server URL.")
        bundle = read_bundle(exercise)
        the_oracle = LocalOracle(bundle.y_target)
    result = solve(bundle, solver, the_oracle, seed=seed, out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / f"{bundle.dirname}_{solver}_labels.csv"
    labels_path.write_text("\n".join(map(str, result.labels.tolist())) + "\n")
    report = result.summary() | {"reveals": result.reveals, "labels": str(labels_path),
                                 "saliency_png": str(result.saliency_png)}
    if bundle.y_target is not None:
        report["score"] = score(bundle, result.labels)
    if server and submit and result.recommend_submit:
        report["submission"] = client.submit(exercise, result.labels)
    (out / f"{bundle.dirname}_{solver}_report.json").write_text(json.dumps(report, indent=2, default=str))
    verdict = "submit" if result.recommend_submit else (
        f"abstain (submitting needs an estimate of at least {result.default_score:g} and "
        f"P(accuracy >= default) of at least {SUBMIT_CONFIDENCE:g})")
    console.print(f"{bundle.dirname} {solver}: {len(result.reveals)} reveals, estimated accuracy "
                  f"{result.estimated_accuracy:.3f}, P(accuracy >= default {result.default_score:g}) "
                  f"{result.p_beats_default:.2f} -> {verdict}; {result.seconds:.1f}s")
    if "score" in report:
        console.print(f"  true target accuracy {report['score']['accuracy']:.3f}, worst group {report['score']['worst_group_accuracy']:.3f}")
    console.print(f"  labels: {labels_path}\n  saliency: {result.saliency_png}")


evaluate_app = typer.Typer(help="Fixed evaluators: score a segmentation dataset with DeepLabv3, validate it, checksum a model.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("checksum")
def evaluate_checksum(model: Path = typer.Argument(..., help="A saved state_dict (.pt), or a checkpoint with a 'model' entry.")) -> None:
    """sha256 of a model's canonical state_dict serialisation (sorted keys, dtype, shape, bytes)."""
    from datarena.evaluate.checksum import checkpoint_sha256

    if not model.exists():
        raise DatarenaError(f"{model} does not exist; pass the path of a saved model.")
    try:
        print(checkpoint_sha256(model))
    except Exception as exc:  # noqa: BLE001 - an arbitrary pickle or a file of something else
        raise DatarenaError(f"{model} is not a model state_dict datarena will read (plain state_dict, a checkpoint "
                            f"with 'model', or a DDP 'module.' state_dict; loaded weights-only): "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None


@evaluate_app.command("validate")
def evaluate_validate(
    dataset: Path = typer.Argument(..., help="A VOC-layout dataset directory."),
    size: int = typer.Option(512, help="Required image and mask size (square); 0 = any size."),
    num_classes: int = typer.Option(21, "--num-classes", help="Mask values must be < this, or 255."),
    max_pairs: int = typer.Option(10_000, "--max-pairs", help="Most pairs allowed."),
) -> None:
    """Check a dataset against the challenge rules; lists every offending file."""
    from datarena.data.segmentation import DatasetRules, validate_dataset

    report = validate_dataset(dataset, DatasetRules(size=(size, size) if size else None, num_classes=num_classes, max_pairs=max_pairs))
    report.raise_for_problems()
    console.print(f"{dataset}: {report.n_pairs} pairs, all valid")


@evaluate_app.command("train")
def evaluate_train(
    dataset: Path = typer.Argument(..., help="Training set: a VOC-layout directory or a .npz file."),
    test: Path = typer.Option(None, "--test", help="Test set (VOC directory or .npz); without it only train and write the model and its checksum (deadline 1)."),
    out: Path = typer.Option(Path("datarena-score"), "--out", help="Directory for report.json, model.pt, overlays.png, checkpoint.pt."),
    budget: str = typer.Option("syntagen", "--budget", help="Preset: syntagen (10k it, batch 8, 512 crop, ResNet-50), syntagen-100k, digit_scenes (CPU scale)."),
    iterations: int = typer.Option(None, "--iterations", help="Override the preset's iteration cap."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the batch size."),
    crop_size: int = typer.Option(None, "--crop-size", help="Override the crop size."),
    backbone: str = typer.Option(None, "--backbone", help="resnet18, resnet34, resnet50 or resnet101."),
    seed: int = typer.Option(None, "--seed", help="Training seed."),
    weights: Path = typer.Option(None, "--backbone-weights", help="Local ImageNet ResNet state_dict (nothing is downloaded)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Backbone start: imagenet (torchvision's file, the syntagen default), digits (a cached digit-pretrained trunk) or none (random, on purpose)."),
    class_weights: str = typer.Option(None, "--class-weights", help="Loss weights: uniform (the protocol) or balanced (median-frequency)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the dataset-rules check."),
) -> None:
    """Score a dataset: train DeepLabv3 under a fixed budget, report mIoU on the test set and the model checksum."""
    device = _device(device)
    from datarena.evaluate.train import budget_from, score_dataset, train_dataset

    b = budget_from(budget, iterations=iterations, batch_size=batch_size, crop_size=crop_size, backbone=backbone, seed=seed,
                  pretrained=pretrained, class_weights=class_weights)
    validate = "skip" if no_validate else "strict"
    if test is None:
        report, _ = train_dataset(dataset, b, out, resume=resume, backbone_weights=weights, device=device, validate=validate)
        console.print(f"trained {report['iterations']} it ({report['train_images_per_second']:.1f} img/s); "
                      f"model {out / 'model.pt'}")
        console.print(f"model sha256 {report['model_sha256']}  (declare it; score later with "
                      f"`datarena evaluate score {out / 'model.pt'} --test TESTSET --checksum {report['model_sha256'][:12]}…`)")
        return
    report = score_dataset(dataset, test, b, out, resume=resume, backbone_weights=weights, device=device, validate=validate)
    _print_scores(report)
    console.print(f"({report['iterations']} it, {report['train_images_per_second']:.1f} img/s)")
    console.print(f"model sha256 {report['model_sha256']}")
    if report["backbone_sha256"]:
        console.print(f"started from {report['backbone_weights']} (sha256 {report['backbone_sha256']})")
    console.print(f"report: {out / 'report.json'}  overlays: {out / 'overlays.png'}")


def _print_scores(report: dict) -> None:
    table = Table(title=f"per-class IoU on {report['n_test_images']} test images")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in report["per_class_iou"].items():
        table.add_row(name, "-" if iou is None else f"{iou:.3f}")
    console.print(table)
    console.print(f"mIoU {report['miou']:.4f}  pixel accuracy {report['pixel_accuracy']:.4f}")


@evaluate_app.command("score")
def evaluate_score(
    model: Path = typer.Argument(..., help="model.pt written by `datarena evaluate train` (or a checkpoint)."),
    test: Path = typer.Option(..., "--test", help="The test set (VOC directory or .npz)."),
    checksum: str = typer.Option(None, "--checksum", help="The checksum declared at deadline 1: a different model is refused."),
    budget: str = typer.Option(None, "--budget", help="Budget preset (default: the one in report.json beside MODEL, else syntagen)."),
    backbone: str = typer.Option(None, "--backbone", help="Override the backbone."),
    out: Path = typer.Option(None, "--out", help="Where report.json and overlays.png go (default: MODEL's directory)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
) -> None:
    """Score a frozen model on a test set (deadline 2), refusing one whose checksum differs from the declared one."""
    device = _device(device)
    import json

    from datarena.evaluate.train import (
        Budget,
        budget_from,
        load_model,
        run_environment,
        score_model,
    )

    recorded = model.parent / "report.json"
    if budget is None and recorded.is_file():
        b = Budget.model_validate(json.loads(recorded.read_text())["budget"])
        if backbone:
            b = b.model_copy(update={"backbone": backbone})
    else:
        b = budget_from(budget or "syntagen", backbone=backbone)
    net, digest = load_model(model, b, device, checksum)
    out = out or model.parent
    report = {"model": str(model), "model_sha256": digest, "budget": b.model_dump(), **run_environment(device),
              **score_model(net, test, b, out, device)}
    (out / "score.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _print_scores(report)
    console.print(f"model sha256 {digest}{' (matches the declared checksum)' if checksum else ''}; "
                  f"report {out / 'score.json'}")


scenes_app = typer.Typer(help="Scene grammars and the batched renderer (digits with class, mask and box).", no_args_is_help=True)
app.add_typer(scenes_app, name="scenes")


@scenes_app.command("list")
def scenes_list() -> None:
    """The shipped scene grammars."""
    from datarena.scenes.grammar import load_grammar, shipped_grammars
    from datarena.scenes.graph import is_graph_grammar, load_graph_grammar

    table = Table(title="shipped scene grammars")
    for col in ("name", "kind", "canvas", "objects", "description"):
        table.add_column(col, overflow="fold")
    for name in shipped_grammars():
        if is_graph_grammar(name):
            gg = load_graph_grammar(name)
            nodes = ", ".join(f"{t} ({spec.count.min}-{spec.count.max} per {spec.parent})" for t, spec in gg.types.items())
            table.add_row(name, "scene graph", f"{gg.canvas}x{gg.canvas}", nodes, gg.description.strip())
            continue
        g = load_grammar(name)
        table.add_row(name, "digits", f"{g.canvas}x{g.canvas}", f"{g.objects.min}-{g.objects.max}", g.description.strip())
    console.print(table)


@scenes_app.command("render")
def scenes_render(
    grammar: str = typer.Argument(None, help="A shipped grammar name (see `datarena scenes list`) or a YAML file."),
    generator: Path = typer.Option(None, "--generator", help="A learned Meta-Sim generator.pt: renders its prior rewritten by it."),
    n: int = typer.Option(1000, "--n", help="Number of scenes."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    seed: int = typer.Option(0, help="Seed; scene i is the same whatever n is."),
    fmt: str = typer.Option("voc", "--format", help="voc (JPEG + palette PNG masks) or npy (X, y, masks, classes, boxes)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    mnist_dir: Path = MNIST_DIR,
) -> None:
    """Render a dataset of scenes with ground truth."""
    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.writers import write_scenes

    transform = None
    if generator is not None:
        from datarena.metasim.io import load_generator

        transform, g = load_generator(generator)
        from datarena.scenes.graph import SceneGraphGrammar, write_graph_scenes

        if isinstance(g, SceneGraphGrammar):  # a learned scene-graph generator
            path = write_graph_scenes(g, n, seed, out, force=force, transform=transform, meta={"learned_generator": str(generator)})
            console.print(f"wrote {n} scenes of {g.name} rewritten by {generator} (voc) to {path}")
            return
    elif grammar is None:
        raise DatarenaError("name a GRAMMAR (see `datarena scenes list`) or pass --generator generator.pt.")
    else:
        from datarena.scenes.graph import is_graph_grammar, load_graph_grammar, write_graph_scenes

        if is_graph_grammar(grammar):  # a scene-graph grammar (aerial): VOC with instances and boxes
            if fmt != "voc":
                raise DatarenaError("scene-graph grammars render to --format voc only.")
            path = write_graph_scenes(load_graph_grammar(grammar), n, seed, out, force=force)
            console.print(f"wrote {n} scenes of {grammar} (voc; instances.npz holds instance ids and boxes) to {path}")
            return
        g = load_grammar(grammar)
    path = write_scenes(g, n, seed, out, fmt=fmt, force=force, mnist_dir=str(mnist_dir) if mnist_dir else None, transform=transform)
    console.print(f"wrote {n} scenes of {g.name} ({fmt}) to {path}; preview: {path / 'preview.png'}")


metasim_app = typer.Typer(help="Meta-Sim: learn a scene generator that matches a target distribution.", no_args_is_help=True)
app.add_typer(metasim_app, name="metasim")


@metasim_app.command("train")
def metasim_train(
    prior: str = typer.Option("mnist", "--prior", help="Prior grammar (name or YAML)."),
    target: str = typer.Option("mnist_rot90", "--target", help="Target grammar (its val digits drive training, its test digits score it)."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: metasim-PRIOR-TARGET)."),
    epochs: int = typer.Option(80, help="Outer steps."),
    loss: str = typer.Option(None, help="both, mmd (distribution only) or task (REINFORCE only); default: both (MNIST grammars), mmd (scene graphs)."),
    seed: int = typer.Option(0, help="Seed."),
    features: Path = typer.Option(None, "--features", help="Feature network checkpoint for the MMD (default: seeded random conv net)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Train task networks on prior / learned / target data and report target test accuracy."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Train a generator from a prior grammar toward a target; writes curves, sample grids and generator.pt."""
    from datarena.metasim.train import MetaSimConfig, summarise, train_metasim
    from datarena.scenes.graph import is_graph_grammar

    out = out or Path(f"metasim-{Path(prior).stem}-{Path(target).stem}")
    if is_graph_grammar(prior):  # scene graphs (aerial): the graph generator, car IoU as the task
        from datarena.metasim.aerial import (
            AerialConfig,
            evaluate_aerial,
            save_aerial_run,
            train_aerial,
        )

        if features is not None:
            raise DatarenaError("--features applies to the MNIST grammars; scene graphs use seeded patch-statistics features.")
        try:
            acfg = AerialConfig(epochs=epochs, seed=seed, **({"loss": loss} if loss else {}))
        except ValueError as exc:
            raise DatarenaError(f"invalid Meta-Sim settings: {exc}") from None
        res = train_aerial(prior, target, acfg)
        if evaluate:
            res.report["evaluation"] = evaluate_aerial(prior, target, acfg, res.generator)
        save_aerial_run(res, prior, target, out, force=force)
        console.print(f"MMD^2 {res.report['mmd_before']:.3f} -> {res.report['mmd_after']:.3f}")
        for name, row in res.report.get("evaluation", {}).items():
            console.print(f"car IoU on target renders, trained on {name}: {row['car_iou']:.3f}")
        console.print(f"wrote {out}/: generator.pt, curves.png, scenes.png (prior / learned / target), report.json")
        return
    try:
        cfg = MetaSimConfig(epochs=epochs, loss=loss or "both", seed=seed)
    except ValueError as exc:
        raise DatarenaError(f"invalid Meta-Sim settings: {exc}") from None
    result = train_metasim(prior, target, out, cfg, features=features, force=force, evaluate=evaluate)
    console.print(summarise(result))
    console.print(f"wrote {out}/: generator.pt, curves.png, samples_prior.png, samples_learned.png, samples_target.png, report.json")


diffuse_app = typer.Typer(help="Generate image + mask pairs with Stable Diffusion; masks come from its own attention.")
app.add_typer(diffuse_app, name="diffuse")


@diffuse_app.command("merge")
def diffuse_merge(
    shards: list[Path] = typer.Argument(..., help="The shard directories of one run (every i of i/n once)."),
    out: Path = typer.Option(..., "--out", help="The merged dataset: the same files and meta.json as the unsharded run."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Join the shards of one `diffuse` run into one dataset."""
    from datarena.diffusion.generate import merge_shards

    path = merge_shards(shards, out, force=force)
    console.print(f"merged {len(shards)} shards into {path}")


@diffuse_app.callback(invoke_without_command=True)
def diffuse_cmd(
    ctx: typer.Context,
    model: Path = typer.Option(None, "--model", help="Local Stable Diffusion v1.x/v2.x diffusers directory (nothing is downloaded)."),
    out: Path = typer.Option(None, "--out", help="Output directory (VOC layout); rerun the same command to resume."),
    n: int = typer.Option(100, "--n", help="Pairs in the whole dataset (at most 10,000)."),
    seed: int = typer.Option(0, help="Master seed: per-image prompts and noise derive from it."),
    shard: str = typer.Option("0/1", help="i/n: this machine writes images i, i+n, i+2n, ..."),
    steps: int = typer.Option(100, help="Denoising steps (Dataset Diffusion: 100)."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    size: int = typer.Option(512, help="Image size (square)."),
    captions: Path = typer.Option(None, "--captions", help="Captions file: .txt (one per line) or .jsonl with caption/classes."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated VOC class names to draw from (default: all 20)."),
    power: int = typer.Option(4, help="Self-attention refinement power."),
    foreground: float = typer.Option(0.6, help="A pixel takes a class where its map is >= this."),
    uncertain: float = typer.Option(0.5, help="Maps in [uncertain, foreground) give 255 (ignored by training)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cuda (fp16) or cpu (fp32)."),
    force: bool = typer.Option(False, "--force", help="Discard an existing output directory."),
    negative_prompt: str = typer.Option(None, "--negative-prompt", help="Unconditional prompt; 'default' = datarena's NEGATIVE_PROMPT."),
    full_prompt_attention: bool = typer.Option(False, "--full-prompt-attention", help="Ablation: mask maps from the whole prompt's tokens, not the class prompt alone."),
    upsample: str = typer.Option("bicubic", "--upsample", help="Upsampling of the attention maps: bicubic (the method) or bilinear."),
) -> None:
    """Generate image + mask pairs with Stable Diffusion; masks come from its own attention."""
    device = _device(device)
    from datarena.data.segmentation import VOC_CLASSES
    from datarena.diffusion.generate import (
        NEGATIVE_PROMPT,
        DiffuseConfig,
        generate_dataset,
        parse_shard,
    )

    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        raise DatarenaError("pass --model SD_DIR and --out DIR (or `datarena diffuse merge SHARDS --out DIR`).")

    index, count = parse_shard(shard)
    ids = []
    for name in (classes.split(",") if classes else []):
        key = name.strip().lower().replace(" ", "")
        if key not in VOC_CLASSES[1:]:
            raise DatarenaError(f"unknown VOC class {name!r}; choose from {', '.join(VOC_CLASSES[1:])}.")
        ids.append(VOC_CLASSES.index(key))
    try:
        cfg = DiffuseConfig(n=n, seed=seed, steps=steps, guidance=guidance, size=size, power=power, foreground=foreground,
                            uncertain=uncertain, classes=ids, captions=str(captions) if captions else None,
                            shard_index=index, shard_count=count, class_prompt_attention=not full_prompt_attention,
                            negative_prompt=NEGATIVE_PROMPT if negative_prompt == "default" else negative_prompt,
                            upsample=upsample)
    except ValueError as exc:
        raise DatarenaError(f"invalid settings: {exc}") from None
    summary = generate_dataset(model, out, cfg, device=device, force=force)
    state = "complete, meta.json written" if summary["complete"] else "incomplete (rerun to resume)"
    console.print(f"{out}: {summary['generated']} pairs generated this run in {summary['seconds']:.1f} s; {state}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Working directory of the demo."),
    seed: int = typer.Option(42, help="Suite seed."),
    linger: float = typer.Option(0.0, help="Keep serving the leaderboard this many seconds at the end."),
) -> None:
    """End to end: generate the suite, serve it, solve every exercise over HTTP, show the leaderboard."""
    from datarena.demo import run_demo

    run_demo(out, seed=seed, console=console, linger=linger)


def main() -> None:
    try:
        app()
    except DatarenaError as err:
        Console(stderr=True, width=None if sys.stderr.isatty() else 140).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
