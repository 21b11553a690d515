from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from datarena.challenge.arena import Arena
from datarena.challenge.phases import commitment, generation_seed, phase_secret
from datarena.challenge.spec import ChallengeSpec
from datarena.http.runner import BackgroundServer
from datarena.underspec.exercises import SourceConfig
from datarena.underspec.generate import generate_suite
from datarena.underspec.suite import load_suite

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one torch thread each (and in the processes they
    # start), or the workers' thread pools fight over the cores and every training slows down.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def suite_dir(tmp_path_factory) -> Path:
    """The default suite generated once on the embedded data (seed 42)."""
    out = tmp_path_factory.mktemp("suite") / "s42"
    generate_suite(load_suite(), 42, out, SourceConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# ---------------------------------------------------------------- server fixtures


SERVER_EXERCISES = ["00", "01", "04"]


def fast_challenge(data_dir: Path, database_url: str | None = None, **over):
    """A small real challenge: three exercises, cheaper argon2 parameters for test speed."""
    params = dict(
        title="test challenge",
        exercises=[{"id": e} for e in SERVER_EXERCISES],
        data_dir=str(data_dir),
        database_url=database_url or f"sqlite:///{data_dir / 'arena.db'}",
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        login_failures_allowed=1000,
    )
    params.update(over)
    return ChallengeSpec.model_validate(params)


# A fixed server secret lets every test arena reuse one generated phase 1 (seed 42).
TEST_SERVER_SECRET = bytes(range(32))


def test_phase_secret(number: int = 1, seed: int = 42) -> str:
    return phase_secret(TEST_SERVER_SECRET, number, seed)


test_phase_secret.__test__ = False  # a helper, not a test


def install_phase_cache(phase_data_cache: Path, data_dir: Path) -> None:
    """Give a fresh data directory the test server secret and a copy of its phase-1 data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = data_dir / "server-secret"
    secret.write_text(TEST_SERVER_SECRET.hex() + "\n")
    secret.chmod(0o600)
    shutil.copytree(phase_data_cache, data_dir / "phase-1")


@pytest.fixture(scope="session")
def phase_data_cache(tmp_path_factory) -> Path:
    """Phase-1 data generated once from the test secret; arenas copy it instead of regenerating."""
    secret = test_phase_secret()
    out = tmp_path_factory.mktemp("phasecache") / "phase-1"
    generate_suite(load_suite(), generation_seed(secret), out, SourceConfig(), only=SERVER_EXERCISES,
                   progress=False, public_extra={"commitment": commitment(secret)})
    return out


def _postgres_url() -> str | None:
    try:
        import psycopg2
    except ImportError:
        return None
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except Exception:
        return None
    conn.autocommit = True
    name = f"datarena_t_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def _drop_postgres(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[-1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


@contextmanager
def serving(backend: str, make_spec):
    """(arena, url): the challenge `make_spec(database_url)` served over HTTP on a fresh database of
    `backend` ("sqlite", or "postgresql", skipped when PostgreSQL is not reachable); dropped after."""
    db_url = None
    if backend == "postgresql":
        db_url = _postgres_url()
        if db_url is None:
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres, database test)")
    arena = Arena(make_spec(db_url))
    arena.start(progress=False)
    try:
        with BackgroundServer(arena) as url:
            yield arena, url
    finally:
        arena.engine.dispose()
        if db_url:
            _drop_postgres(db_url)


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def backend(request, tmp_path_factory, phase_data_cache):
    """(arena, url) of a running server on a fresh database of each backend."""
    data_dir = tmp_path_factory.mktemp(f"arena-{request.param}")
    install_phase_cache(phase_data_cache, data_dir)
    with serving(request.param, lambda db_url: fast_challenge(data_dir, db_url)) as served:
        yield served
