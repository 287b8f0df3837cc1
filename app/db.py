"""The database engine and session factory, made when the app starts serving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, cast
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy import MetaData, exc, text
from sqlalchemy.engine.interfaces import IsolationLevel
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool, QueuePool

from app.settings import Settings

# Explicit constraint names keep Alembic's autogenerate and SQLite batch mode stable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


TRANSACTIONS: IsolationLevel = "READ COMMITTED"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time.

    `stale_connection`: the connection it came from is dead, and out of the pool (the
    server restarted or ended it, or asyncpg left it in a state it cannot leave); a retry
    gets a fresh connection."""

    def __init__(self, message: str, *, stale_connection: bool = False) -> None:
        super().__init__(message)
        self.stale_connection = stale_connection


@dataclass(frozen=True)
class Database:
    """A process's database: one pool, read from through `reader` (one statement each) and
    written to through `sessions` (a transaction each)."""

    engine: AsyncEngine
    reader: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    def pool_usage(self) -> dict[str, int]:
        """The pool's connections held now (`in_use`), and the callers waiting to get one
        (`waiting`: for a free connection, or for a new one to connect)."""
        pool = self.engine.sync_engine.pool
        in_use = pool.checkedout() if isinstance(pool, QueuePool) else 0
        return {"in_use": in_use, "waiting": _waiting.get(pool, 0)}

    async def close(self) -> None:
        await self.engine.dispose()


# Callers waiting for a connection, per pool (an engine and its option engines share one).
_waiting: WeakKeyDictionary[Pool, int] = WeakKeyDictionary()


@contextmanager
def _waiting_for(engine: AsyncEngine) -> Iterator[None]:
    pool = engine.sync_engine.pool
    _waiting[pool] = _waiting.get(pool, 0) + 1
    try:
        yield
    finally:
        _waiting[pool] -= 1


def open_database(settings: Settings) -> Database:
    """The pool and what reads and writes through it; opens no connection yet."""
    engine = make_engine(settings)
    # PostgreSQL's engine is in autocommit mode already (see `make_engine`).
    reader = engine if engine.dialect.name == "postgresql" else make_reader(engine)
    return Database(engine=engine, reader=reader, sessions=make_sessionmaker(engine))


def make_engine(settings: Settings) -> AsyncEngine:
    """One engine per process; pooled for PostgreSQL and MySQL, a connection per session for
    SQLite.

    PostgreSQL's connections are in autocommit mode: a read is one statement and one round
    trip, with no BEGIN and COMMIT around it (a single SELECT sees one consistent snapshot
    anyway), and no isolation level is switched on each checkout; a session asks for a
    transaction (`make_sessionmaker`).

    Every wait is bounded, so that a request ends in a 503 rather than hangs: for a pooled
    connection, to connect, and for a statement (asyncpg's timeout is client-side, so it
    also ends one that waits on a lock or on a server that stopped answering).

    No pre-ping: it costs a round trip on every checkout. A connection the server closed
    while it sat in the pool fails on first use instead; SQLAlchemy then invalidates it and
    every older one, and the read or the write (if it had not reached its commit) is run
    once more on a fresh connection."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": settings.db_connect_timeout})
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=3600,
        connect_args=_connect_args(url, settings),
        isolation_level=_isolation(url),
    )


def _isolation(url: str) -> IsolationLevel:
    """Autocommit on PostgreSQL (see `make_engine`). READ COMMITTED on MySQL, PostgreSQL's
    default: MySQL's own, REPEATABLE READ, locks the gaps between index entries too:
    concurrent writes that insert into one table and delete from it by an index then
    deadlock (error 1213; docs/PLATFORMS.md, "MySQL and MariaDB")."""
    return "AUTOCOMMIT" if url.startswith("postgresql") else TRANSACTIONS


def _connect_args(url: str, settings: Settings) -> dict[str, Any]:
    """The connect and statement deadlines in each driver's words. asyncmy's read timeout,
    like asyncpg's command timeout, is the client's own (a lock wait or a silent server
    included), and closes the connection."""
    if url.startswith("mysql"):
        return {
            "connect_timeout": settings.db_connect_timeout,
            "read_timeout": settings.db_statement_timeout,
        }
    return {
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_statement_timeout,
    }


def make_reader(engine: AsyncEngine) -> AsyncEngine:
    """`engine` in autocommit mode, for reads (see `make_engine`), on an engine that is not
    already in it.

    But on MySQL, whose transactions begin by themselves (no BEGIN to save), the pool as
    it is: switching a pooled connection to autocommit and back costs a round trip each
    way, and a switch on a dead connection fails where SQLAlchemy neither wraps the error
    nor returns the connection to the pool (a leak, then 503s for good)."""
    if engine.dialect.name == "mysql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose connections are in a transaction, READ COMMITTED on PostgreSQL (whose
    engine is in autocommit mode, see `make_engine`)."""
    bind = engine
    if engine.dialect.name == "postgresql":
        bind = engine.execution_options(isolation_level=TRANSACTIONS)
    # expire_on_commit=False: reading an attribute after commit must not fire implicit IO.
    return async_sessionmaker(bind, expire_on_commit=False)


# What a lost, refused or overloaded database raises, across asyncpg, aiosqlite and the pool.
UNAVAILABLE_ERRORS = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes of a server that is gone, going, or not taking work yet: connection
# exceptions (08), insufficient resources (53: too many connections) and operator
# intervention (57: shut down by an admin or a crash, starting up, statement cancelled).
# asyncpg raises these as plain `PostgresError`s, which SQLAlchemy wraps as `DBAPIError`.
UNAVAILABLE_SQLSTATES = ("08", "53", "57")


def _broken(error: BaseException) -> bool:
    """asyncpg's own state error ("cannot switch to state ...; another operation is in
    progress"): the connection is unusable though still open, so SQLAlchemy would keep it."""
    orig = error.orig if isinstance(error, exc.DBAPIError) else None
    return isinstance(getattr(orig, "__cause__", None), asyncpg.exceptions.InternalClientError)


def _stale(error: BaseException) -> bool:
    """The connection that raised `error` is dead and out of the pool (SQLAlchemy saw it
    closed, or `_broken` made us invalidate it): a retry gets a fresh one."""
    return isinstance(error, exc.DBAPIError) and (error.connection_invalidated or _broken(error))


def _unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """`error` as a `DatabaseUnavailable` if it means "the database cannot serve right
    now", else `None` (a bug or a constraint: the caller lets it through)."""
    orig = getattr(error, "orig", None)
    message = str(orig or error)  # the driver's words, without the statement and its values
    if _stale(error):
        return DatabaseUnavailable(message, stale_connection=True)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if isinstance(error, UNAVAILABLE_ERRORS) or sqlstate.startswith(UNAVAILABLE_SQLSTATES):
        return DatabaseUnavailable(message)
    return None


@contextmanager
def _raising_unavailable() -> Iterator[None]:
    """Re-raise what `_unavailable` recognises as `DatabaseUnavailable`, the rest as it is."""
    try:
        yield
    except Exception as error:
        if (unavailable := _unavailable(error)) is None:
            raise
        raise unavailable from error


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that commits on success; failures to use the database
    become `DatabaseUnavailable` so that the views can answer 503."""
    with _raising_unavailable():
        async with sessions() as session, session.begin():
            with _waiting_for(cast(AsyncEngine, sessions.kw["bind"])):
                await session.connection()  # now, not at the first statement: no round trip
            try:
                yield session
            except exc.DBAPIError as error:
                if _broken(error):
                    await session.invalidate()  # while the session still holds it
                raise


async def read[R](reader: AsyncEngine, query: Callable[[AsyncConnection], Awaitable[R]]) -> R:
    """`await query(connection)` on a pooled autocommit connection (see `make_reader`).

    A connection found dead on use (the server restarted since it was pooled) is replaced
    and the query run once more: reads are safe to repeat. Failures to use the database
    become `DatabaseUnavailable`."""
    with _raising_unavailable():
        try:
            return await _read_once(reader, query)
        except exc.DBAPIError as error:
            if not _stale(error):
                raise
        return await _read_once(reader, query)  # the pool has dropped the dead ones


async def _read_once[R](
    reader: AsyncEngine, query: Callable[[AsyncConnection], Awaitable[R]]
) -> R:
    async with AsyncExitStack() as stack:
        with _waiting_for(reader):
            connection = await stack.enter_async_context(reader.connect())
        try:
            return await query(connection)
        except exc.DBAPIError as error:
            if _broken(error):
                await connection.invalidate(error)
            raise


async def ping(reader: AsyncEngine) -> None:
    """Raise `DatabaseUnavailable` unless the database answers a trivial query."""
    await read(reader, lambda connection: connection.execute(text("SELECT 1")))
