"""start estimates carry their range: when a waiting job may start at the soonest and at the
latest, and how many of the jobs it waits on have no history that says when they end

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:20:00.000000

Existing rows get none: the scheduler writes them with the next forecast.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("est_start_earliest", sa.Float(), nullable=True))
        batch.add_column(sa.Column("est_start_latest", sa.Float(), nullable=True))
        batch.add_column(sa.Column("est_unbounded", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("est_unbounded")
        batch.drop_column("est_start_latest")
        batch.drop_column("est_start_earliest")
