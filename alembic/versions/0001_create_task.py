"""Create table task.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = ("mysql", "mariadb")
# MySQL's plain DATETIME drops the microseconds; it has no time zone (the app writes UTC).
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *MYSQL)


def upgrade() -> None:
    dialect = op.get_context().dialect
    op.create_table(
        "task",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=_now(dialect), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=_now(dialect), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
        **_mysql_table_options(dialect),
    )


def downgrade() -> None:
    op.drop_table("task")


def _now(dialect: Dialect) -> sa.TextClause | sa.Function[object]:
    # MySQL wants a default of the column's own precision (MariaDB accepts either).
    return sa.text("CURRENT_TIMESTAMP(6)") if dialect.name in MYSQL else sa.func.now()


def _mysql_table_options(dialect: Dialect) -> dict[str, str]:
    """utf8mb4 (any character, emoji included, whatever the server's default) and a
    collation that compares names as PostgreSQL does: by code point, case and trailing
    spaces included (MariaDB's `_bin` collations PAD SPACE: 'a' = 'a '; the NO PAD ones
    do not; MySQL 8's `utf8mb4_0900_bin` is NO PAD)."""
    if dialect.name not in MYSQL:
        return {}
    collation = "utf8mb4_nopad_bin" if dialect.is_mariadb else "utf8mb4_0900_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}
