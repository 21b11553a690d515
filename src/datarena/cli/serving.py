"""`datarena serve` and `datarena worker`: the server and its job workers."""

from __future__ import annotations

from pathlib import Path

import typer

from datarena.cli.common import (
    CHALLENGE,
    DATA_DIR,
    _arena,
    app,
    console,
)
from datarena.errors import DatarenaError


@app.command("serve")
def serve_cmd(
    challenge: Path = CHALLENGE,
    data_dir: Path = DATA_DIR,
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve a challenge: API, reveal endpoint, leaderboard pages."""
    from datarena.http.runner import serve

    arena = _arena(challenge, data_dir, start=True)
    console.print(f"serving [bold]{arena.spec.title}[/] on http://{host}:{port}  (database {arena.url})")
    serve(arena, host, port)




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
    from datarena.challenge.spec import load_challenge
    from datarena.jobs.celery_app import run_worker
    from datarena.jobs.kinds import QUEUES

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
