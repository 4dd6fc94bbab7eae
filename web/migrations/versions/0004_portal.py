"""portal: passwords, utilization per minute

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
    op.create_table(
        "utilization_minutes",
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("flavor", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("sector", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("allocated", sa.Integer(), nullable=False),
        sa.Column("gpu_s", sa.Float(), nullable=False),
        sa.Column("busy_gpu_s", sa.Float(), nullable=False),
        sa.Column("idle_gpu_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "flavor", "sector"),
    )


def downgrade() -> None:
    op.drop_table("utilization_minutes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_hash")
