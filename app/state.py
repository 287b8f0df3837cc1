"""What the app opens when it starts serving and closes when it stops: kept on the app,
never at module level, so that each process (and each test's event loop) has its own."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cache import CacheClient, make_cache_client
from app.db import make_engine, make_sessionmaker
from app.settings import Settings
from app.tasks.service import TaskService

EXTENSION_KEY = "tasklist"


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    tasks: TaskService
    cache: CacheClient


def init_app(app: Quart, settings: Settings) -> None:
    @app.before_serving
    async def open_resources() -> None:
        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
        app.extensions[EXTENSION_KEY] = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            tasks=TaskService(sessions),
            cache=make_cache_client(settings),
        )

    @app.after_serving
    async def close_resources() -> None:
        state: AppState | None = app.extensions.pop(EXTENSION_KEY, None)
        if state is not None:
            await state.engine.dispose()
            await state.cache.close()


def get_state() -> AppState:
    return current_app.extensions[EXTENSION_KEY]


def get_tasks() -> TaskService:
    return get_state().tasks
