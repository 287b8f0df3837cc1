"""The MariaDB server for the tests: one database per run, created and dropped here.

MariaDB is found at `TASKLIST_TEST_MARIADB_URL` (default: the CI machine's
`mysql://root@127.0.0.1:3306/`). If it cannot be reached the run fails, unless a person
sets `TASKLIST_TEST_SKIP_MARIADB=1` on purpose. Register with
``pytest_plugins = ["tests.support.mariadb"]`` for the `mariadb_url` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import create_database_on, migrated, run_on_server

MARIADB_SERVER_URL = os.environ.get("TASKLIST_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
SKIP_MARIADB = os.environ.get("TASKLIST_TEST_SKIP_MARIADB") == "1"


def create_mariadb_database() -> str:
    """Create an empty database with a unique name and return its async URL."""
    return create_database_on(
        MARIADB_SERVER_URL, server="MariaDB", quote="`", skip=SKIP_MARIADB,
        url_variable="TASKLIST_TEST_MARIADB_URL", skip_variable="TASKLIST_TEST_SKIP_MARIADB",
    )


def drop_mariadb_database(url: str) -> None:
    run_on_server(MARIADB_SERVER_URL, f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A migrated MariaDB database for this test run, dropped at the end."""
    yield from migrated(create_mariadb_database(), drop_mariadb_database)
