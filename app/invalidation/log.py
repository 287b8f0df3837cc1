"""The invalidation log: the generation topics each write made stale, stored by the write's
own transaction, so that an acknowledged write has a durable invalidation.

A row means "what is cached under `topic` is dead since this row's transaction committed".
Any replacement of the topic's generation token by a fresh random one after that commit
delivers it: rows need no order, and one bump delivers all the rows of a topic (its
column is named `namespace`, the schema's word before topics had their own). Rows are
leased by the database's clock: a new row is `due` a lease after its write (its writer's
time to deliver it); a writer that could not deliver makes its rows due at once; a due row
is claimed by one process, which extends the lease while it delivers
(docs/CACHE.md, "Invalidation log (PostgreSQL and MySQL)").
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from app.db import Base

# On PostgreSQL, rows made due at once are announced on this channel (`release`).
CHANNEL = "cache_invalidation"
TOPIC_MAX_LENGTH = 200


class InvalidationRow(Base):
    __tablename__ = "cache_invalidation"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    write_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    topic: Mapped[str] = mapped_column("namespace", String(TOPIC_MAX_LENGTH), nullable=False)
    # when a process may claim the row, in milliseconds since the epoch by the database
    due_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


@dataclass(frozen=True)
class Invalidation:
    """What one write invalidates; `id` ties its rows together for the writer to forget."""

    id: str
    topics: tuple[str, ...]

    @classmethod
    def of(cls, topics: Iterable[str]) -> Invalidation:
        # hex: MySQL compares the column without regard to case in its default collation
        return cls(secrets.token_hex(12), tuple(topics))


@dataclass(frozen=True)
class Claimed:
    id: int
    topic: str


class clock_ms(FunctionElement[int]):  # noqa: N801 (a SQL function, named like one)
    """Now, in milliseconds since the epoch, by the database server's clock."""

    type = BigInteger()
    inherit_cache = True


@compiles(clock_ms, "postgresql")
def _postgresql_clock(element: clock_ms, compiler: Any, **kw: Any) -> str:
    return "CAST(floor(extract(epoch from clock_timestamp()) * 1000) AS BIGINT)"


@compiles(clock_ms, "mysql")
@compiles(clock_ms, "mariadb")
def _mysql_clock(element: clock_ms, compiler: Any, **kw: Any) -> str:
    return "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"


@compiles(clock_ms, "sqlite")
def _sqlite_clock(element: clock_ms, compiler: Any, **kw: Any) -> str:
    return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


_log = cast(Table, InvalidationRow.__table__)  # typed FromClause; a mapped class's table is a Table


# Built once, so that its compiled form is cached: a statement made per call (as
# `insert().values([...])` is) is compiled again on every write (docs/CACHE.md,
# "Invalidation log (PostgreSQL and MySQL)").
_record = insert(_log).values(
    write_id=bindparam("write_id"),
    namespace=bindparam("namespace"),
    due_ms=clock_ms() + bindparam("lease_ms"),
)


COUNT_ROWS = select(func.count()).select_from(_log)


async def backlog(session: AsyncSession) -> int:
    """The rows in the log: invalidations not yet delivered and forgotten."""
    return (await session.execute(COUNT_ROWS)).scalar_one()


async def record(session: AsyncSession, invalidation: Invalidation, *, lease_ms: int) -> None:
    """Store `invalidation` in the session's transaction (one statement), due a lease from now."""
    await session.execute(
        _record,
        [
            {"write_id": invalidation.id, "namespace": topic, "lease_ms": lease_ms}
            for topic in invalidation.topics
        ],
    )


async def claim_due(session: AsyncSession, *, lease_ms: int, limit: int) -> list[Claimed]:
    """Claim up to `limit` due rows for a lease: rows another transaction is claiming are
    skipped, not waited for."""
    due = (
        select(_log.c.id)
        .where(_log.c.due_ms <= clock_ms())
        .order_by(_log.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    extend = update(_log).values(due_ms=clock_ms() + lease_ms)
    if session.get_bind().dialect.update_returning:
        rows = await session.execute(
            extend.where(_log.c.id.in_(due.scalar_subquery()))
            .returning(_log.c.id, _log.c.namespace)
        )
        return [Claimed(row.id, row.namespace) for row in rows]
    # MySQL and MariaDB: no UPDATE ... RETURNING, nor LIMIT in an IN subquery
    found = [Claimed(row.id, row.namespace) for row in await session.execute(
        due.add_columns(_log.c.namespace)
    )]
    if found:
        await session.execute(extend.where(_log.c.id.in_([row.id for row in found])))
    return found


async def settle(
    session: AsyncSession, *, delivered: Sequence[int], released: Sequence[int]
) -> None:
    """Delete the `delivered` rows; `release` the others (claimed, not delivered)."""
    if delivered:
        await session.execute(delete(_log).where(_log.c.id.in_(delivered)))
    if released:
        await release(session, _log.c.id.in_(released))


async def release(session: AsyncSession, rows: ColumnElement[bool]) -> None:
    """Make `rows` due now, for another process to deliver, and wake the listeners (sent
    when the transaction commits)."""
    await session.execute(update(_log).where(rows).values(due_ms=clock_ms()))
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def of_writes(write_ids: Sequence[str]) -> ColumnElement[bool]:
    return _log.c.write_id.in_(write_ids)


async def forget(session: AsyncSession, write_ids: Sequence[str]) -> None:
    """Delete the rows of writes whose writer delivered them.

    On PostgreSQL the commit does not wait for its WAL flush, nor adds one of its own to
    the writes' flushes: a delete lost in a crash only means a row delivered twice."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL synchronous_commit = off"))
    await session.execute(delete(_log).where(_log.c.write_id.in_(write_ids)))
