"""asyncpg's exceptions as SQLAlchemy raises them, for tests of how the app classifies them."""

from __future__ import annotations

from sqlalchemy import exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncEngine


def wrapped(
    engine: AsyncEngine, error: Exception, *, connection_invalidated: bool = False
) -> exc.DBAPIError:
    """`error` (an asyncpg exception) as SQLAlchemy raises it from a statement on `engine`:
    translated by the dialect into its DB-API class (the asyncpg error is its `__cause__`),
    then wrapped in the matching `sqlalchemy.exc` class."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except dbapi.Error as translated:
        statement_error = exc.DBAPIError.instance(
            "SELECT 1", None, translated, dbapi.Error,
            connection_invalidated=connection_invalidated, dialect=engine.dialect,
        )
        # Typed as returning a StatementError: for a DB-API error (as here) it is a DBAPIError.
        assert isinstance(statement_error, exc.DBAPIError), statement_error
        return statement_error
    raise AssertionError(f"the dialect did not translate {error!r}")
