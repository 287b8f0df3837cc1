"""What the app opens when it starts serving and closes when it stops: kept on the app,
never at module level, so that each process (and each test's event loop) has its own."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from quart import Quart, current_app

from app.cache import CacheBackend, CacheClient, KeyBuilder, MemcachedBackend, MemoryBackend
from app.cache.backends.null import NullBackend
from app.cache.dashboard.history import HitRatioHistory
from app.cache.dashboard.peers import Peers
from app.cache.dashboard.report import published_counts, sample_hit_ratio
from app.cache.rate_limit import RateLimit
from app.cache.service import CacheService
from app.db import Database, open_database
from app.invalidation.courier import Courier
from app.request_metrics import RequestMetrics
from app.settings import Settings
from app.tasks.service import TaskService
from app.webcache.fragments import FragmentCache, fragment_cache_of, init_fragment_cache

EXTENSION_KEY = "tasklist"
log = logging.getLogger("tasklist.state")


@dataclass
class AppState:
    settings: Settings
    database: Database
    cache_client: CacheClient
    cache_service: CacheService
    cache_history: HitRatioHistory
    peers: Peers
    tasks: TaskService
    write_limit: RateLimit | None  # WRITE_RATE_LIMIT (app/write_limit.py)
    background: list[asyncio.Task[None]]


def init_app(
    app: Quart, settings: Settings, *, release: str, requests: RequestMetrics
) -> None:
    """Open the resources when `app` starts serving; `release` names its code (fragments
    rendered by another release are not served); `requests` are published with the
    process's other figures."""

    @app.before_serving
    async def open_resources() -> None:
        state = app.extensions[EXTENSION_KEY] = open_state(settings, requests)
        if state.cache_service.enabled:
            init_fragment_cache(app.jinja_env, FragmentCache(state.cache_client, release=release))

    @app.after_serving
    async def close_resources() -> None:
        fragments = fragment_cache_of(app.jinja_env)
        if fragments is not None:
            await fragments.stored()
        state: AppState | None = app.extensions.pop(EXTENSION_KEY, None)
        init_fragment_cache(app.jinja_env, None)
        if state is not None:
            await close_state(state)


def open_state(settings: Settings, requests: RequestMetrics) -> AppState:
    """The process's pools, clients and services, and its background tasks started (so it
    runs in the serving event loop). Opens no connection yet: each pool does on first use."""
    database = open_database(settings)
    cache = make_cache_client(settings)
    cache_service = CacheService(cache, enabled=not isinstance(cache.backend, NullBackend))
    history = HitRatioHistory()
    courier = None
    if settings.logs_invalidations:
        courier = Courier(database.sessions, cache_service.bump)

    def published() -> dict[str, Any]:
        """What this process tells the others: the dashboard's and `/metrics`' figures."""
        return {
            **published_counts(cache, history),
            "requests": requests.published(),
            "pool": database.pool_usage(),
        }

    peers = Peers(cache, published, interval=settings.cache_stats_publish_seconds)
    background = [sample_hit_ratio(cache, history), peers.run()]
    if courier is not None:
        background.append(courier.run())
    return AppState(
        settings=settings,
        database=database,
        cache_client=cache,
        cache_service=cache_service,
        cache_history=history,
        peers=peers,
        tasks=TaskService(database, cache_service, courier),
        write_limit=_write_limit(cache, settings.write_rate_limit),
        background=[asyncio.create_task(job) for job in background],
    )


def _write_limit(cache: CacheClient, per_minute: int) -> RateLimit | None:
    return RateLimit(cache, "writes", per_minute, window=60) if per_minute else None


def make_cache_client(settings: Settings) -> CacheClient:
    """memcached when `settings.memcache_servers` is set, else the in-process LRU; a
    backend that stores nothing when the cache is switched off (`CACHE_ENABLED=0`: the one
    place that reads it; everything else asks `CacheService.enabled`). No I/O."""
    backend: CacheBackend
    if not settings.cache_enabled:
        backend = NullBackend()
    elif settings.memcache_servers:
        backend = MemcachedBackend(
            settings.memcache_servers,
            username=settings.memcache_username,
            password=settings.memcache_password,
            auth_mode=settings.memcache_auth_mode,
            connect_timeout=settings.cache_connect_timeout,
            op_timeout=settings.cache_op_timeout,
            pool_size=settings.cache_pool_size,
            retry_timeout=settings.cache_retry_timeout,
            dead_timeout=settings.cache_dead_timeout,
            failure_limit=settings.cache_failure_limit,
        )
    else:
        backend = MemoryBackend(max_items=settings.cache_memory_max_items)
    return CacheClient(
        backend,
        keys=KeyBuilder(settings.cache_key_prefix),
        max_item_size=settings.cache_max_item_size,
    )


async def close_state(state: AppState) -> None:
    """Stop the background tasks, leave the dashboard's directory, close the pools."""
    for task in state.background:
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)
    await state.peers.withdraw()  # gone from the dashboard now, not after its TTL
    await state.cache_service.close()
    await state.database.close()
    log.info("closed the database pool and the cache connections")


def get_state() -> AppState:
    state: AppState = current_app.extensions[EXTENSION_KEY]
    return state


def find_state(app: Quart) -> AppState | None:
    """The state while `app` is serving, else `None` (for code outside a request)."""
    return app.extensions.get(EXTENSION_KEY)


def get_tasks() -> TaskService:
    return get_state().tasks


def find_cache(app: Quart) -> CacheClient | None:
    found = find_state(app)
    return found.cache_client if found is not None else None
