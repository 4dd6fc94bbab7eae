"""portal indexes: job_usage by idle_since (the operators' idle allocations)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_usage_idle_since", "job_usage", ["idle_since"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_usage_idle_since", table_name="job_usage")
