"""Create table cache_invalidation, the invalidation log (docs/CACHE.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_invalidation",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("write_id", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_invalidation")),
    )
    op.create_index(
        op.f("ix_cache_invalidation_write_id"), "cache_invalidation", ["write_id"]
    )
    op.create_index(op.f("ix_cache_invalidation_due_ms"), "cache_invalidation", ["due_ms"])


def downgrade() -> None:
    op.drop_table("cache_invalidation")
