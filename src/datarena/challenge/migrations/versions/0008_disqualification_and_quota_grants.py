"""Disqualified dataset submissions (a public reason) and extra submissions granted by organisers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_submissions") as batch:
        batch.add_column(sa.Column("disqualified", sa.Text, nullable=True))
    op.create_table(
        "quota_grants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False, index=True),
        sa.Column("track_id", sa.String(32), nullable=False),
        sa.Column("phase_id", sa.Integer, sa.ForeignKey("phases.id"), nullable=False),
        sa.Column("extra", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_grants")
    with op.batch_alter_table("dataset_submissions") as batch:
        batch.drop_column("disqualified")
