"""The jobs table (datarena.jobs): state, attempts, lease, progress, result, failure reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("team_id", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("time_limit_s", sa.Float, nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("last_worker", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime, nullable=True),
        sa.Column("heartbeat_at", sa.DateTime, nullable=True),
        sa.Column("published_at", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("progress_step", sa.Integer, nullable=True),
        sa.Column("progress_total", sa.Integer, nullable=True),
        sa.Column("progress_message", sa.String(200), nullable=True),
        sa.Column("rate", sa.Float, nullable=True),
        sa.Column("eta_s", sa.Float, nullable=True),
        sa.Column("log_tail", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_team_id", "jobs", ["team_id"])


def downgrade() -> None:
    op.drop_table("jobs")
