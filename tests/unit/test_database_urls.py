"""The database URL in every form the platforms hand it out: Heroku's `DATABASE_URL`,
PythonAnywhere's and the tutorial's MySQL URLs, Elastic Beanstalk's `RDS_*` variables."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from app.settings import Settings, SettingsError

DEV = {"APP_ENV": "development"}
RDS = {
    "RDS_HOSTNAME": "tasks.abc123.eu-west-1.rds.amazonaws.com",
    "RDS_PORT": "3306",
    "RDS_DB_NAME": "ebdb",
    "RDS_USERNAME": "admin",
    "RDS_PASSWORD": "secret",
}


def database_url(*envs: dict[str, str], **env: str) -> str:
    """The database URL of the settings of these variables merged, the later ones winning."""
    merged = {**DEV}
    for more in (*envs, env):
        merged.update(more)
    return Settings.from_env(merged).database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mysql://u:p@db/app", "mysql+asyncmy://u:p@db/app?charset=utf8mb4"),
        ("mysql+mysqldb://u:p@db:3306/app", "mysql+asyncmy://u:p@db:3306/app?charset=utf8mb4"),
        ("mysql+pymysql://u:p@db/app", "mysql+asyncmy://u:p@db/app?charset=utf8mb4"),
        ("mysql+asyncmy://u@db/app", "mysql+asyncmy://u@db/app?charset=utf8mb4"),
        ("mysql://u@db/app?charset=latin1", "mysql+asyncmy://u@db/app?charset=latin1"),
        (
            "mysql://u@db/app?ssl_ca=/etc/ca.pem",
            "mysql+asyncmy://u@db/app?charset=utf8mb4&ssl_ca=%2Fetc%2Fca.pem",
        ),
    ],
)
def test_mysql_urls_are_rewritten_to_asyncmy_in_utf8mb4(given: str, expected: str) -> None:
    assert database_url(DATABASE_URL=given) == expected


def test_pythonanywheres_database_names_keep_their_dollar() -> None:
    """PythonAnywhere names a database `user$name`, on the user's own MySQL host."""
    given = "mysql+mysqldb://alice:pw@alice.mysql.pythonanywhere-services.com/alice$tasks"
    url = make_url(database_url(DATABASE_URL=given))
    assert url.drivername == "mysql+asyncmy"
    assert (url.host, url.database) == ("alice.mysql.pythonanywhere-services.com", "alice$tasks")


def test_a_quoted_mysql_password_stays_the_same_password() -> None:
    url = database_url(DATABASE_URL="mysql://u:p%40ss%3Aw%2Fo%25rd@db/app")
    assert make_url(url).password == "p@ss:w/o%rd"


@pytest.mark.parametrize("password", ["p@ss", "a:b", "a/b", "100%", "two words", "@:/% ?#&="])
def test_rds_variables_make_the_url_with_the_password_quoted(password: str) -> None:
    url = make_url(database_url(RDS, RDS_PASSWORD=password, RDS_USERNAME=f"u {password}"))
    assert url.drivername == "mysql+asyncmy"
    assert (url.host, url.port, url.database) == (RDS["RDS_HOSTNAME"], 3306, "ebdb")
    assert (url.username, url.password) == (f"u {password}", password)
    assert url.query["charset"] == "utf8mb4"


@pytest.mark.parametrize(
    ("port", "engine", "driver"),
    [
        ("3306", "", "mysql+asyncmy"),
        ("5432", "", "postgresql+asyncpg"),
        ("6000", "postgres", "postgresql+asyncpg"),
        ("3307", "MySQL", "mysql+asyncmy"),
        ("5432", "mysql", "mysql+asyncmy"),
    ],
)
def test_rds_engine_comes_from_rds_engine_else_the_port(
    port: str, engine: str, driver: str
) -> None:
    url = make_url(database_url(RDS, RDS_PORT=port, RDS_ENGINE=engine))
    assert (url.drivername, url.port) == (driver, int(port))


def test_database_url_wins_over_rds_variables() -> None:
    url = database_url(RDS, DATABASE_URL="postgres://u@db/app")
    assert url == "postgresql+asyncpg://u@db/app"


@pytest.mark.parametrize("missing", ["RDS_PORT", "RDS_DB_NAME", "RDS_USERNAME", "RDS_PASSWORD"])
def test_a_missing_rds_variable_is_named(missing: str) -> None:
    env = {name: value for name, value in RDS.items() if name != missing}
    with pytest.raises(SettingsError, match=f"RDS_HOSTNAME is set but {missing} is not"):
        database_url(env)
    if missing != "RDS_PASSWORD":
        with pytest.raises(SettingsError, match=f"RDS_HOSTNAME is set but {missing} is not"):
            database_url(env, {missing: " "})


def test_an_empty_rds_password_is_no_password() -> None:
    assert make_url(database_url(RDS, RDS_PASSWORD="")).password == ""


def test_an_rds_port_of_no_known_engine_asks_for_rds_engine() -> None:
    with pytest.raises(SettingsError, match="RDS_PORT is 6000.*set RDS_ENGINE to mysql or post"):
        database_url(RDS, RDS_PORT="6000")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RDS_PORT", "db", "RDS_PORT must be a port number, not 'db'"),
        ("RDS_PORT", "70000", "RDS_PORT must be a port number"),
        ("RDS_ENGINE", "oracle", "RDS_ENGINE must be mysql or postgres, not 'oracle'"),
    ],
)
def test_malformed_rds_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        database_url(RDS, {name: value})
