"""Settings come from the environment (and `.env`, which never overrides it); a variable
that is not set keeps its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.settings import DEFAULT_SQLITE_PATH, DEVELOPMENT_SECRET_KEY, Settings, SettingsError

DEV = {"APP_ENV": "development"}


def test_defaults_run_on_sqlite_without_a_cache_server() -> None:
    settings = Settings.from_env(DEV)
    assert settings.database_url == f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}"
    assert settings.memcache_servers == ()
    assert settings.cache_key_prefix == "tasklist"
    assert settings.development


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
        ("sqlite+aiosqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
    ],
)
def test_database_url_is_rewritten_for_the_async_drivers(given: str, expected: str) -> None:
    assert Settings.from_env({**DEV, "DATABASE_URL": given}).database_url == expected


def test_production_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({})
    assert Settings.from_env({"SECRET_KEY": "s3cret"}).secret_key == "s3cret"


def test_development_has_a_fixed_key_and_production_keeps_the_given_one() -> None:
    assert Settings.from_env(DEV).secret_key == DEVELOPMENT_SECRET_KEY
    assert Settings.from_env({**DEV, "SECRET_KEY": " mine "}).secret_key == "mine"
    production = Settings.from_env({"SECRET_KEY": "given-key"})
    assert not production.development
    assert production.secret_key == "given-key"


def test_memcachier_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            **DEV,
            "MEMCACHIER_SERVERS": "mc1.example:11211, mc2.example:11212,mc3.example",
            "MEMCACHIER_USERNAME": "user",
            "MEMCACHIER_PASSWORD": "pass",
            "CACHE_KEY_PREFIX": "shop",
        }
    )
    assert settings.memcache_servers == (
        "mc1.example:11211", "mc2.example:11212", "mc3.example:11211"
    )
    assert (settings.memcache_username, settings.memcache_password) == ("user", "pass")
    assert settings.cache_key_prefix == "shop"


def test_credentials_never_show_in_the_repr() -> None:
    settings = Settings.from_env(
        {
            **DEV,
            "MEMCACHIER_PASSWORD": "hunter2",
            "SECRET_KEY": "k3y",
            "DATABASE_URL": "postgres://app:db-pa55@db/app",
        }
    )
    assert "hunter2" not in repr(settings)
    assert "k3y" not in repr(settings)
    assert "db-pa55" not in repr(settings)


def test_log_format_is_plain_unless_json_is_asked_for() -> None:
    assert Settings.from_env(DEV).log_format == "plain"
    assert Settings.from_env({**DEV, "LOG_FORMAT": ""}).log_format == "plain"
    assert Settings.from_env({**DEV, "LOG_FORMAT": " JSON "}).log_format == "json"
    assert Settings.from_env({**DEV, "LOG_FORMAT": "plain"}).log_format == "plain"


def test_an_unknown_log_format_names_the_variable_and_the_choices() -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT must be plain or json, not 'xml'"):
        Settings.from_env({**DEV, "LOG_FORMAT": "xml"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "staging"),
        ("MEMCACHIER_SERVERS", "host:notaport"),
        ("MEMCACHIER_SERVERS", "host:70000"),
        ("DB_POOL_SIZE", "many"),
        ("MEMCACHIER_AUTH_MODE", "sasl"),
        ("LOG_FORMAT", "xml"),
        ("INVALIDATION_LOG", "sometimes"),
        ("CACHE_ENABLED", "maybe"),
    ],
)
def test_malformed_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**DEV, name: value})


@pytest.mark.parametrize(
    ("database_url", "flag", "expected"),
    [
        ("", "", False),  # SQLite: one process, nobody else to deliver
        ("postgres://u@db/tasks", "", True),
        ("mysql://u@db/tasks", "", True),
        ("postgres://u@db/tasks", "0", False),
        ("postgres://u@db/tasks", "off", False),
        ("", "1", True),
    ],
)
def test_the_invalidation_log_is_on_by_default_on_every_database_but_sqlite(
    database_url: str, flag: str, expected: bool
) -> None:
    env = {**DEV, "DATABASE_URL": database_url, "INVALIDATION_LOG": flag}
    assert Settings.from_env(env).logs_invalidations is expected


def test_cache_enabled_takes_the_usual_spellings() -> None:
    assert Settings.from_env({**DEV, "CACHE_ENABLED": "off"}).cache_enabled is False
    assert Settings.from_env({**DEV, "CACHE_ENABLED": "False"}).cache_enabled is False
    assert Settings.from_env({**DEV, "CACHE_ENABLED": "yes"}).cache_enabled is True
    assert Settings.from_env(DEV).cache_enabled is True


def test_create_app_reads_dotenv_without_overriding_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = {
        "APP_ENV": "development",
        "SECRET_KEY": "from-dotenv",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dotenv.sqlite3'}",
    }
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    monkeypatch.setattr("app.PROJECT_ROOT", tmp_path)
    for name in dotenv:
        # Set, then unset: monkeypatch then also removes what `.env` sets, after the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("SECRET_KEY", "from-environment")

    app = create_app()

    assert app.config["SECRET_KEY"] == "from-environment"
    assert app.config["SESSION_COOKIE_SECURE"] is False, "APP_ENV=development came from .env"
    monkeypatch.delenv("SECRET_KEY")
    assert create_app().config["SECRET_KEY"] == "from-dotenv", "what the environment lacks"
