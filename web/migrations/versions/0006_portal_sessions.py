"""portal sessions: one row per signed-in session, so a session can be ended at once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00.000000

Cookies from before this revision name no session row: their holders sign in again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user"], ["users.name"]),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_portal_sessions_user", "portal_sessions", ["user"], unique=False)
    op.create_index(
        "ix_portal_sessions_expires_at", "portal_sessions", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_portal_sessions_expires_at", table_name="portal_sessions")
    op.drop_index("ix_portal_sessions_user", table_name="portal_sessions")
    op.drop_table("portal_sessions")
