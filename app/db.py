"""The database engine and session factory, made when the app starts serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData, exc, text
from sqlalchemy.ext.asyncio import (
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
    """The database could not be reached or did not answer in time."""


def make_engine(settings: Settings) -> AsyncEngine:
    """One engine per process; pooled for PostgreSQL, a connection per session for SQLite."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": settings.db_connect_timeout})
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        connect_args={"timeout": settings.db_connect_timeout},
    )


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
        raise DatabaseUnavailable(str(error)) from error


async def ping(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Raise `DatabaseUnavailable` unless the database answers a trivial query."""
    async with transaction(sessions) as session:
        await session.execute(text("SELECT 1"))
