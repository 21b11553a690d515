"""Alembic environment: the URL comes from the Config object datarena builds."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from datarena.challenge.models import Base

config = context.config
target_metadata = Base.metadata

connectable = config.attributes.get("connection")
if connectable is None:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
