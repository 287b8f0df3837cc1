"""The database engine and session factory, made when the app starts serving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import MetaData, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from app.settings import Settings

# Explicit constraint names keep Alembic's autogenerate and SQLite batch mode stable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time.

    `stale_connection`: the connection had died while it sat in the pool (the server
    restarted, or ended it); the pool has since dropped it and every older one, so a
    retry gets a fresh connection."""

    def __init__(self, message: str, *, stale_connection: bool = False) -> None:
        super().__init__(message)
        self.stale_connection = stale_connection


def _unavailable(error: BaseException) -> DatabaseUnavailable:
    stale = bool(getattr(error, "connection_invalidated", False))
    return DatabaseUnavailable(str(error), stale_connection=stale)


def make_engine(settings: Settings) -> AsyncEngine:
    """One engine per process; pooled for PostgreSQL, a connection per session for SQLite.

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
        connect_args={"timeout": settings.db_connect_timeout},
    )


def make_reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool in autocommit mode, for reads: one statement is one round trip, with
    no BEGIN and COMMIT around it (a single SELECT sees one consistent snapshot anyway)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: reading an attribute after commit must not fire implicit IO.
    return async_sessionmaker(engine, expire_on_commit=False)


# What a lost, refused or overloaded database raises, across asyncpg, aiosqlite and the pool.
UNAVAILABLE_ERRORS = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that commits on success; connection failures become
    `DatabaseUnavailable` so that the views can answer 503."""
    try:
        async with sessions() as session, session.begin():
            yield session
    except UNAVAILABLE_ERRORS as error:
        raise _unavailable(error) from error


async def read[R](reader: AsyncEngine, query: Callable[[AsyncConnection], Awaitable[R]]) -> R:
    """`await query(connection)` on a pooled autocommit connection (see `make_reader`).

    A connection found dead on use (the server restarted since it was pooled) is replaced
    and the query run once more: reads are safe to repeat. Failures to reach the database
    become `DatabaseUnavailable`."""
    try:
        try:
            async with reader.connect() as connection:
                return await query(connection)
        except exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
        async with reader.connect() as connection:  # the pool has dropped the dead ones
            return await query(connection)
    except UNAVAILABLE_ERRORS as error:
        raise _unavailable(error) from error


async def ping(reader: AsyncEngine) -> None:
    """Raise `DatabaseUnavailable` unless the database answers a trivial query."""
    await read(reader, lambda connection: connection.execute(text("SELECT 1")))
