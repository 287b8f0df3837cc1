"""Which database errors mean "unavailable" (a 503) and which are bugs (a 500).

The errors are asyncpg's own exception classes, translated and wrapped exactly as
SQLAlchemy's asyncpg dialect does it (`tests.support.db_errors`), so that the classifier
sees what the app sees when PostgreSQL stops, restarts or ends a connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import DatabaseUnavailable, _unavailable
from tests.support.db_errors import wrapped

errors = asyncpg.exceptions


@pytest.fixture(scope="module")
def engine() -> Iterator[AsyncEngine]:
    """An engine for its dialect only: it never connects."""
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    yield engine
    engine.sync_engine.dispose()


@pytest.mark.parametrize(
    "error",
    [
        errors.AdminShutdownError("terminating connection due to administrator command"),
        errors.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        ),
        errors.CannotConnectNowError("the database system is starting up"),
        errors.CrashShutdownError("terminating connection because of crash of another"),
        errors.TooManyConnectionsError("sorry, too many clients already"),
        errors.ConnectionFailureError("server closed the connection unexpectedly"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_server_going_or_not_ready_is_unavailable(
    engine: AsyncEngine, error: Exception
) -> None:
    sqla_error = wrapped(engine, error)
    assert type(sqla_error) is exc.DBAPIError  # neither Operational- nor InterfaceError
    unavailable = _unavailable(sqla_error)
    assert isinstance(unavailable, DatabaseUnavailable)
    assert not unavailable.stale_connection
    assert str(error) in str(unavailable) and "SELECT" not in str(unavailable)


def test_a_connection_sqlalchemy_saw_die_is_unavailable_and_stale(engine: AsyncEngine) -> None:
    error = errors.AdminShutdownError("terminating connection due to administrator command")
    unavailable = _unavailable(wrapped(engine, error, connection_invalidated=True))
    assert unavailable is not None and unavailable.stale_connection


def test_asyncpgs_state_error_is_unavailable_and_stale(engine: AsyncEngine) -> None:
    """The caller invalidates the connection (see `app.db`), so a retry is safe."""
    error = errors.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    sqla_error = wrapped(engine, error)
    assert isinstance(sqla_error, exc.InternalError)
    unavailable = _unavailable(sqla_error)
    assert unavailable is not None and unavailable.stale_connection


@pytest.mark.parametrize(
    "error",
    [
        errors.UniqueViolationError("duplicate key value violates unique constraint"),
        errors.PostgresSyntaxError("syntax error at or near"),
        errors.UndefinedTableError('relation "task" does not exist'),
        errors.InternalServerError("cache lookup failed for relation 1"),
        errors.DataError("invalid input syntax"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_bug_or_a_bad_statement_is_not_unavailable(
    engine: AsyncEngine, error: Exception
) -> None:
    assert _unavailable(wrapped(engine, error)) is None


def test_pool_timeouts_and_refused_connections_are_unavailable() -> None:
    for error in (
        exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ):
        assert isinstance(_unavailable(error), DatabaseUnavailable)
    assert _unavailable(ValueError("not a database error")) is None
