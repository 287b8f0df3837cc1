"""What the app opens when it starts serving and closes when it stops: kept on the app,
never at module level, so that each process (and each test's event loop) has its own."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from quart import Quart, current_app

from app.cache import CacheClient, make_cache_client
from app.cache.dashboard.history import HitRatioHistory
from app.cache.dashboard.peers import Peers
from app.cache.dashboard.report import published_counts, sample_hit_ratio
from app.cache.service import CacheService
from app.db import Database, open_database
from app.invalidation.courier import Courier
from app.settings import Settings
from app.tasks.service import TaskService
from app.webcache.fragments import FragmentCache, fragment_cache_of, init_fragment_cache

EXTENSION_KEY = "tasklist"
log = logging.getLogger("tasklist.state")


@dataclass
class AppState:
    settings: Settings
    database: Database
    cache: CacheClient
    cache_service: CacheService
    cache_history: HitRatioHistory
    peers: Peers
    tasks: TaskService
    background: list[asyncio.Task[None]]


def init_app(app: Quart, settings: Settings, *, release: str) -> None:
    """Open the resources when `app` starts serving; `release` names its code (fragments
    rendered by another release are not served)."""

    @app.before_serving
    async def open_resources() -> None:
        state = app.extensions[EXTENSION_KEY] = open_state(settings)
        if settings.cache_enabled:
            init_fragment_cache(app.jinja_env, FragmentCache(state.cache, release=release))

    @app.after_serving
    async def close_resources() -> None:
        fragments = fragment_cache_of(app.jinja_env)
        if fragments is not None:
            await fragments.stored()
        state: AppState | None = app.extensions.pop(EXTENSION_KEY, None)
        init_fragment_cache(app.jinja_env, None)
        if state is not None:
            await close_state(state)


def open_state(settings: Settings) -> AppState:
    """The process's pools, clients and services, and its background tasks started (so it
    runs in the serving event loop). Opens no connection yet: each pool does on first use."""
    database = open_database(settings)
    cache = make_cache_client(settings)
    cache_service = CacheService(cache, enabled=settings.cache_enabled)
    history = HitRatioHistory()
    courier = None
    if settings.logs_invalidations:
        courier = Courier(database.sessions, cache_service.bump)
    peers = Peers(
        cache,
        lambda: published_counts(cache, history),
        interval=settings.cache_stats_publish_seconds,
    )
    background = [sample_hit_ratio(cache, history), peers.run()]
    if courier is not None:
        background.append(courier.run())
    return AppState(
        settings=settings,
        database=database,
        cache=cache,
        cache_service=cache_service,
        cache_history=history,
        peers=peers,
        tasks=TaskService(database, cache_service, courier),
        background=[asyncio.create_task(job) for job in background],
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
    return found.cache if found is not None else None
