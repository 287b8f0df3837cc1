"""Every setting of the app, read once from the environment (and `.env`) in `create_app`.

The names are the tutorial's (`DATABASE_URL`, `MEMCACHIER_*`, `SECRET_KEY`) so that a PaaS
add-on configures the app without any glue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal, get_args

from sqlalchemy.engine import URL, make_url

from app.cache.backends.auth import AUTH_MODES, AuthMode

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "instance" / "tasklist.sqlite3"
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}"
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"

Environment = Literal["production", "development"]
ENVIRONMENTS: tuple[Environment, ...] = get_args(Environment)
LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
Networks = tuple[IPv4Network | IPv6Network, ...]
EVERY_ADDRESS: Networks = (ip_network("0.0.0.0/0"), ip_network("::/0"))


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The app's settings; every default is written here, once (`from_env` reads them)."""

    env: Environment = "production"
    secret_key: str = field(default=DEVELOPMENT_SECRET_KEY, repr=False)
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    # Every connection a process may hold stays pooled: an overflow connection is closed
    # when it comes back, so under load each request past the pool's size opened one.
    db_pool_size: int = 10
    db_max_overflow: int = 0
    db_pool_timeout: float = 5.0
    db_connect_timeout: float = 5.0
    db_statement_timeout: float = 5.0
    invalidation_log: bool | None = None  # see `logs_invalidations`
    # 10,000 characters of notes percent- or \u-escaped at 12 bytes each, plus a name.
    max_body_bytes: int = 128 * 1024

    memcache_servers: tuple[str, ...] = ()
    memcache_username: str | None = field(default=None, repr=False)
    memcache_password: str | None = field(default=None, repr=False)
    memcache_auth_mode: AuthMode = "auto"
    cache_key_prefix: str = "tasklist"
    cache_connect_timeout: float = 2.0  # memcached deadlines: the tutorial's values
    cache_op_timeout: float = 0.75
    cache_pool_size: int = 8
    cache_retry_timeout: float = 2.0
    cache_dead_timeout: float = 30.0
    cache_failure_limit: int = 3
    cache_max_item_size: int = 1024 * 1024
    cache_memory_max_items: int = 10_000
    cache_recent_bytes: int = 32 * 1024 * 1024
    cache_enabled: bool = True
    cache_stats_publish_seconds: float = 2.0  # how often each process publishes its counters
    log_format: LogFormat = "plain"
    # The reverse proxies whose X-Forwarded-For names the client (app/proxies.py); none:
    # a request's client is the address its connection came from.
    forwarded_allow_ips: Networks = ()
    # The operator surfaces (/stats, /api/stats, /metrics) need it (app/operator_access.py);
    # empty: open in development, absent (404) in production.
    operator_token: str = field(default="", repr=False)
    write_rate_limit: int = 30  # writes a minute per client, across processes; 0: no limit

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def logs_invalidations(self) -> bool:
        """Whether writes record their invalidations in the database (docs/CACHE.md): by
        default on every database but SQLite, which serves one process."""
        if self.invalidation_log is not None:
            return self.invalidation_log
        return not self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from `environ` (default: `os.environ`); an unset or blank
        variable keeps the default.

        Raises `SettingsError` for a malformed value, or for a production app without
        `SECRET_KEY`.
        """
        env = os.environ if environ is None else environ
        app_env = _choice(env, "APP_ENV", ENVIRONMENTS, cls.env)
        return cls(
            env=app_env,
            secret_key=_secret_key(env, app_env),
            database_url=database_url_from_env(env),
            invalidation_log=_flag(env, "INVALIDATION_LOG"),
            db_pool_size=_int(env, "DB_POOL_SIZE", cls.db_pool_size),
            db_max_overflow=_int(env, "DB_MAX_OVERFLOW", cls.db_max_overflow),
            db_pool_timeout=_float(env, "DB_POOL_TIMEOUT", cls.db_pool_timeout),
            db_statement_timeout=_float(env, "DB_STATEMENT_TIMEOUT", cls.db_statement_timeout),
            memcache_servers=parse_servers(env.get("MEMCACHIER_SERVERS", "")),
            memcache_username=env.get("MEMCACHIER_USERNAME") or None,
            memcache_password=env.get("MEMCACHIER_PASSWORD") or None,
            memcache_auth_mode=_choice(
                env, "MEMCACHIER_AUTH_MODE", AUTH_MODES, cls.memcache_auth_mode
            ),
            cache_key_prefix=env.get("CACHE_KEY_PREFIX", "").strip() or cls.cache_key_prefix,
            cache_pool_size=_int(env, "CACHE_POOL_SIZE", cls.cache_pool_size),
            cache_connect_timeout=_float(env, "CACHE_CONNECT_TIMEOUT", cls.cache_connect_timeout),
            cache_op_timeout=_float(env, "CACHE_OP_TIMEOUT", cls.cache_op_timeout),
            cache_retry_timeout=_float(env, "CACHE_RETRY_TIMEOUT", cls.cache_retry_timeout),
            cache_dead_timeout=_float(env, "CACHE_DEAD_TIMEOUT", cls.cache_dead_timeout),
            cache_failure_limit=_int(env, "CACHE_FAILURE_LIMIT", cls.cache_failure_limit),
            cache_max_item_size=_int(env, "CACHE_MAX_ITEM_SIZE", cls.cache_max_item_size),
            cache_recent_bytes=_int(env, "CACHE_RECENT_BYTES", cls.cache_recent_bytes),
            cache_enabled=_flag(env, "CACHE_ENABLED") is not False,
            cache_stats_publish_seconds=_positive(
                env, "CACHE_STATS_PUBLISH_SECONDS", cls.cache_stats_publish_seconds
            ),
            log_format=_choice(env, "LOG_FORMAT", LOG_FORMATS, cls.log_format),
            forwarded_allow_ips=parse_networks(env.get("FORWARDED_ALLOW_IPS", "")),
            operator_token=env.get("OPERATOR_TOKEN", "").strip(),
            write_rate_limit=_not_negative(env, "WRITE_RATE_LIMIT", cls.write_rate_limit),
        )


def _secret_key(env: Mapping[str, str], app_env: Environment) -> str:
    """`SECRET_KEY`; without it a fixed key in development, a refusal in production."""
    secret_key = env.get("SECRET_KEY", "").strip()
    if secret_key:
        return secret_key
    if app_env == "production":
        raise SettingsError(
            "SECRET_KEY is not set. Set it to a long random string "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or set APP_ENV=development for a local run."
        )
    return DEVELOPMENT_SECRET_KEY


def database_url_from_env(env: Mapping[str, str]) -> str:
    """`DATABASE_URL`, else Elastic Beanstalk's `RDS_*` variables, else the SQLite default;
    for the app and for `alembic upgrade head` alike."""
    url = env.get("DATABASE_URL", "").strip()
    if not url and env.get("RDS_HOSTNAME", "").strip():
        url = rds_database_url(env)
    return normalise_database_url(url)


def normalise_database_url(url: str) -> str:
    """Map the URLs a PaaS hands out onto the async drivers; empty means the SQLite default.

    MySQL URLs (`mysql://`, and the sync drivers' `mysql+mysqldb://`, `mysql+pymysql://`
    that PythonAnywhere and the tutorial use) go to asyncmy, in utf8mb4 unless they name a
    charset: MySQL's `utf8` holds no emoji."""
    url = url.strip()
    if not url:
        DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        return DEFAULT_DATABASE_URL
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url.removeprefix(scheme)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    if url.startswith(MYSQL_SCHEMES):
        parsed = make_url(url)
        if parsed.get_driver_name() in SYNC_MYSQL_DRIVERS:
            parsed = parsed.set(drivername="mysql+asyncmy")
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return parsed.render_as_string(hide_password=False)
    return url


MYSQL_SCHEMES = ("mysql://", "mysql+")
SYNC_MYSQL_DRIVERS = ("mysqldb", "pymysql")
RDS_ENGINES = {"mysql": "mysql+asyncmy", "postgres": "postgresql+asyncpg"}
RDS_DEFAULT_PORTS = {"3306": "mysql", "5432": "postgres"}


def rds_database_url(env: Mapping[str, str]) -> str:
    """The URL of an Elastic Beanstalk environment's RDS database, from the `RDS_*`
    variables EB sets. The engine comes from `RDS_ENGINE` (`mysql` or `postgres`), else
    from the port (3306 or 5432). User and password are quoted, so any character is safe;
    the password may be empty (a database without one), not unset."""
    _require_rds_variables(env)
    port = env["RDS_PORT"].strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"RDS_PORT must be a port number, not {port!r}")
    return URL.create(
        _rds_driver(env, port),
        username=env["RDS_USERNAME"],
        password=env["RDS_PASSWORD"],
        host=env["RDS_HOSTNAME"].strip(),
        port=int(port),
        database=env["RDS_DB_NAME"].strip(),
    ).render_as_string(hide_password=False)


def _require_rds_variables(env: Mapping[str, str]) -> None:
    """Refuse a partial set of the five `RDS_*` variables (the password may be empty)."""
    required = ("RDS_HOSTNAME", "RDS_PORT", "RDS_DB_NAME", "RDS_USERNAME")
    missing = [name for name in required if not env.get(name, "").strip()]
    if "RDS_PASSWORD" not in env:
        missing.append("RDS_PASSWORD")
    if missing:
        raise SettingsError(
            f"RDS_HOSTNAME is set but {', '.join(missing)} is not: Elastic Beanstalk sets "
            "all five RDS_* variables for an attached database; set the missing ones, or "
            "DATABASE_URL instead."
        )


def _rds_driver(env: Mapping[str, str], port: str) -> str:
    """The async driver of `RDS_ENGINE`, else of the engine the port is the default of."""
    engine = env.get("RDS_ENGINE", "").strip().lower() or RDS_DEFAULT_PORTS.get(port)
    if engine is None:
        raise SettingsError(
            f"RDS_PORT is {port}, which says nothing of the engine: set RDS_ENGINE to "
            "mysql or postgres."
        )
    if engine not in RDS_ENGINES:
        raise SettingsError(f"RDS_ENGINE must be mysql or postgres, not {engine!r}")
    return RDS_ENGINES[engine]


def parse_servers(value: str) -> tuple[str, ...]:
    """`"a:11211, b:11211"` -> `("a:11211", "b:11211")`; a bare host gets port 11211."""
    servers = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "11211"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"MEMCACHIER_SERVERS: {item!r} is not host:port")
        servers.append(f"{host}:{port}")
    return tuple(servers)


def parse_networks(value: str) -> Networks:
    """`FORWARDED_ALLOW_IPS`: `"10.0.0.5, 172.29.87.0/24"` -> those networks (an address is a
    network of one); `*` is every address (for an app nothing but its proxy can reach)."""
    networks: list[IPv4Network | IPv6Network] = []
    for item in value.split(","):
        item = item.strip()
        if item == "*":
            networks.extend(EVERY_ADDRESS)
        elif item:
            try:
                networks.append(ip_network(item))
            except ValueError:
                raise SettingsError(
                    f"FORWARDED_ALLOW_IPS: {item!r} is not an IP address or network "
                    "(e.g. 10.0.0.5 or 172.29.87.0/24, with no host bits set)"
                ) from None
    return tuple(networks)


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    """A yes/no setting; `None` when it is not set."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true or false), not {raw!r}")


def _choice[T: str](env: Mapping[str, str], name: str, choices: tuple[T, ...], default: T) -> T:
    """One of `choices` (case-insensitive); `default` when the variable is not set."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    for choice in choices:
        if raw == choice:
            return choice
    alternatives = f"{', '.join(choices[:-1])} or {choices[-1]}"
    raise SettingsError(f"{name} must be {alternatives}, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _parsed(env, name, int, default, "a whole number")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _parsed(env, name, float, default, "a number")


def _not_negative(env: Mapping[str, str], name: str, default: int) -> int:
    number = _int(env, name, default)
    if number < 0:
        raise SettingsError(f"{name} must be 0 or more, not {number}")
    return number


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of seconds above 0 and finite."""
    seconds = _float(env, name, default)
    if not 0 < seconds < float("inf"):
        raise SettingsError(f"{name} must be a positive number, not {seconds!r}")
    return seconds


def _parsed[T](
    env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T, what: str
) -> T:
    """`parse` of the variable; `default` when it is not set."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None
