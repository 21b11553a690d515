"""The challenge database: engines (shared with job workers, `datarena.db`) and Alembic migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from datarena.db import make_engine, session_factory

__all__ = ["make_engine", "migrate", "session_factory"]


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
