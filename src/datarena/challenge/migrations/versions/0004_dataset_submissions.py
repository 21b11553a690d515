"""Dataset tracks: uploaded datasets, their scoring and verification jobs, syntagen claims.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("phase_id", sa.Integer, sa.ForeignKey("phases.id"), nullable=False),
        sa.Column("track_id", sa.String(32), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("archive_bytes", sa.Integer, nullable=False),
        sa.Column("dataset_path", sa.Text, nullable=False),
        sa.Column("n_pairs", sa.Integer, nullable=False),
        sa.Column("seed", sa.String(64), nullable=True),
        sa.Column("declared_checksum", sa.String(64), nullable=True),
        sa.Column("method", sa.Text, nullable=True),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("claimed_score", sa.Float, nullable=True),
        sa.Column("code_path", sa.Text, nullable=True),
        sa.Column("code_sha256", sa.String(64), nullable=True),
        sa.Column("verify_job_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("team_id", "phase_id", "track_id", "slot", name="uq_dataset_submission_slot"),
    )


def downgrade() -> None:
    op.drop_table("dataset_submissions")
