"""The `task` table (the tutorial's name)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, func, text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.tasks.schemas import NAME_MAX_LENGTH, NOTES_MAX_LENGTH

# A task's version: `secrets.token_urlsafe(16)`, 22 characters (the rows migrated by 0003 have "0").
VERSION_LENGTH = 22
# BIGINT on PostgreSQL; SQLite needs exactly INTEGER for an auto-incrementing rowid alias.
TaskId = BigInteger().with_variant(Integer(), "sqlite")
# MySQL's DATETIME keeps microseconds only when asked to, and no time zone: the app writes UTC.
Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class TaskRow(Base):
    """On MySQL the table is utf8mb4 with a binary NO PAD collation (alembic/versions/0001)."""

    __tablename__ = "task"

    id: Mapped[int] = mapped_column(TaskId, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), nullable=False)
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # VARCHAR, not TEXT: MySQL gives a TEXT column no literal default (existing rows get '').
    notes: Mapped[str] = mapped_column(
        String(NOTES_MAX_LENGTH), nullable=False, server_default=text("''")
    )
    version: Mapped[str] = mapped_column(
        String(VERSION_LENGTH), nullable=False, server_default=text("'0'")
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=func.now()
    )
