"""Add the task's notes (Markdown source) and version (what its cached fragments are
checked against).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing tasks get empty notes and version "0"; the app gives every insert and update
    # a random version. batch_alter_table: SQLite cannot drop a column in place (downgrade).
    with op.batch_alter_table("task") as batch:
        batch.add_column(
            sa.Column("notes", sa.String(length=10_000), server_default=sa.text("''"),
                      nullable=False)
        )
        batch.add_column(
            sa.Column("version", sa.String(length=22), server_default=sa.text("'0'"),
                      nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_column("version")
        batch.drop_column("notes")
