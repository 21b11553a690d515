"""Database engines shared by the server and the job workers: SQLite (WAL) by default, PostgreSQL by URL.

It sits below `jobs` and `server` because both open the same database (a worker on another
machine needs only its URL); the schema's migrations live with the challenge store (`challenge/store.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from datarena.errors import ConfigError

DATABASE_ENV = "DATARENA_DATABASE_URL"


def utcnow() -> datetime:
    """Naive UTC (the database stores UTC without a zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str, pool_size: int = 20) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives a crash
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith(("postgresql", "postgres")):
        return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)
    raise ConfigError(f"unsupported database URL {url!r}; use sqlite:///PATH or postgresql://USER@HOST/DB.")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
