"""The `task` table (the tutorial's name)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.tasks.schemas import NAME_MAX_LENGTH

# BIGINT on PostgreSQL; SQLite needs exactly INTEGER for an auto-incrementing rowid alias.
TaskId = BigInteger().with_variant(Integer(), "sqlite")


class TaskRow(Base):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(TaskId, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), nullable=False)
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
