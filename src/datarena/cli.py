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
    mnist_dir: Path = MNIST_DIR,
    cifar_dir: Path = CIFAR_DIR,
    faces_dir: Path = FACES_DIR,
) -> None:
    """Generate the whole exercise suite from a seed."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import load_suite

    results = generate_suite(load_suite(suite), seed, out, _sources(mnist_dir, cifar_dir, faces_dir), force=force, only=only, mix_rate=mix_rate)
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
    console.print(f"opened {phase.name} (seed {phase.seed}); data in {phase.data_dir}")


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
    verdict = "submit" if result.recommend_submit else "abstain (estimate below the default score)"
    console.print(f"{bundle.dirname} {solver}: {len(result.reveals)} reveals, estimated accuracy "
                  f"{result.estimated_accuracy:.3f} -> {verdict}; {result.seconds:.1f}s")
    if "score" in report:
        console.print(f"  true target accuracy {report['score']['accuracy']:.3f}, worst group {report['score']['worst_group_accuracy']:.3f}")
    console.print(f"  labels: {labels_path}\n  saliency: {result.saliency_png}")


evaluate_app = typer.Typer(help="Fixed evaluators: model checksums (DeepLabv3 scoring is in progress).", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("checksum")
def evaluate_checksum(model: Path = typer.Argument(..., help="A saved state_dict (.pt), or a checkpoint with a 'model' entry.")) -> None:
    """sha256 of a model's canonical state_dict serialisation (sorted keys, dtype, shape, bytes)."""
    from datarena.evaluate.checksum import checkpoint_sha256

    if not model.exists():
        raise DatarenaError(f"{model} does not exist; pass the path of a saved model.")
    print(checkpoint_sha256(model))


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
