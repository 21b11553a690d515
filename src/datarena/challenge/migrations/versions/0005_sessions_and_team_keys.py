"""Sessions that end and team names unique by their folded form.

Tokens gain an expiry and a revocation time (rows issued before this revision expire 30 days
after they were issued); teams gain `name_key`, the NFKC case-folded name, unique. Existing teams
whose names fold to the same key keep their rows: the later ones get their id appended to the key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import unicodedata
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime, nullable=True))
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("name_key", sa.String(64), nullable=True))
    conn = op.get_bind()
    tokens = sa.table("tokens", sa.column("id", sa.Integer), sa.column("created_at", sa.DateTime),
                      sa.column("expires_at", sa.DateTime))
    for tid, created in conn.execute(sa.select(tokens.c.id, tokens.c.created_at)).all():
        conn.execute(tokens.update().where(tokens.c.id == tid).values(expires_at=created + timedelta(days=30)))
    teams = sa.table("teams", sa.column("id", sa.Integer), sa.column("name", sa.String),
                     sa.column("name_key", sa.String))
    seen: set[str] = set()
    for tid, name in conn.execute(sa.select(teams.c.id, teams.c.name).order_by(teams.c.id)).all():
        key = unicodedata.normalize("NFKC", name).casefold()
        if key in seen:
            key = f"{key}#{tid}"[:64]
        seen.add(key)
        conn.execute(teams.update().where(teams.c.id == tid).values(name_key=key))
    with op.batch_alter_table("teams") as batch:
        batch.alter_column("name_key", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_team_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_constraint("uq_team_name_key", type_="unique")
        batch.drop_column("name_key")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
