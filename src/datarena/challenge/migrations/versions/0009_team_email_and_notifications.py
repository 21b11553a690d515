"""A team's optional email address; which scoring job a team was last emailed about.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("email", sa.String(254), nullable=True))
    with op.batch_alter_table("dataset_submissions") as batch:
        batch.add_column(sa.Column("notified_job", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_submissions") as batch:
        batch.drop_column("notified_job")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("email")
