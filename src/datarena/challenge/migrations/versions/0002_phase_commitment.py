"""Phase commitments: the phase number, the commitment served while it runs, the revealed secret.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("phases") as batch:
        batch.add_column(sa.Column("number", sa.Integer, nullable=True))
        batch.add_column(sa.Column("commitment", sa.String(64), nullable=True))
        batch.add_column(sa.Column("revealed_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("revealed_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("phases") as batch:
        for name in ("revealed_at", "revealed_secret", "commitment", "number"):
            batch.drop_column(name)
