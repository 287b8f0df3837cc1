"""tasklist: the MemCachier Flask task list, rebuilt async on Quart."""

from __future__ import annotations

from dotenv import load_dotenv
from quart import Quart
from quart_schema import QuartSchema

from app import (
    errors,
    limits,
    operator_access,
    proxies,
    request_log,
    security,
    state,
    templating,
    write_limit,
)
from app.api.body import StrictJSONRequest
from app.api.openapi import ApiDescription
from app.asgi import ASGIApp, HeaderLookup, wrap_asgi
from app.cache.service import CacheService
from app.htmx import wants_partial
from app.release import release_digest
from app.request_metrics import RequestMetrics
from app.settings import PROJECT_ROOT, Settings
from app.webcache.fragments import init_fragment_cache
from app.webcache.middleware import ViewCacheMiddleware
from app.webcache.sessions import CacheSessionInterface, has_session_cookie


def create_app(settings: Settings | None = None) -> Quart:
    """Build the app. Without `settings`, read them from the environment and `.env`
    (which never overrides a variable that is already set). Opens nothing: the database
    and cache connections are made when the app starts serving."""
    if settings is None:
        load_dotenv(PROJECT_ROOT / ".env", override=False)
        settings = Settings.from_env()
    request_log.configure_logging(settings.log_format)  # before anything logs
    app = _quart_app(settings)
    _register_blueprints(app)
    templating.init_app(app)
    # Sessions (flashes) live in the cache; fragment tags work from the first template on.
    app.session_interface = CacheSessionInterface(  # type: ignore[assignment]  # Quart annotates
        state.find_cache  # the attribute with its default class, not SessionInterface
    )
    init_fragment_cache(app.jinja_env, None)
    errors.init_app(app)
    operator_access.init_app(app, settings)
    limits.init_app(app)  # right around Quart: it sees every body the app is sent
    release = release_digest()
    metrics = RequestMetrics(app.url_map)
    state.init_app(app, settings, release=release, requests=metrics)
    install_view_cache(app, release, settings.cache_recent_bytes)
    security.init_app(app)  # around the cache: cached responses get the security headers too
    write_limit.init_app(app)  # after the cross-origin check: a refused write is not counted
    request_log.init_app(app, metrics)  # every response is logged and counted, cached ones too
    # Outermost: every layer sees the client a trusted proxy forwarded (FORWARDED_ALLOW_IPS).
    proxies.init_app(app, settings.forwarded_allow_ips)
    return app


def _quart_app(settings: Settings) -> Quart:
    """The Quart app, configured, with its API description."""
    app = Quart(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.request_class = StrictJSONRequest
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.development,
        JSON_SORT_KEYS=False,
    )
    QuartSchema(
        app,
        info={"title": "tasklist API", "version": "1"},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=ApiDescription,
    )
    return app


def _register_blueprints(app: Quart) -> None:
    from app.api import bp as api_bp
    from app.health import bp as health_bp
    from app.web import bp as web_bp

    app.register_blueprint(web_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)


def install_view_cache(app: Quart, release: str, recent_bytes: int) -> None:
    """Serve `@cached` views from the cache in front of Quart (see `app.webcache.middleware`),
    keeping up to `recent_bytes` of the responses served lately in this process."""

    def get_service() -> CacheService | None:
        found = state.find_state(app)
        if found is None or not found.cache_service.enabled:
            return None
        return found.cache_service

    def has_session(headers: HeaderLookup) -> bool:
        return has_session_cookie(headers.get("cookie"), app.config["SESSION_COOKIE_NAME"])

    def view_cache(asgi_app: ASGIApp) -> ASGIApp:
        return ViewCacheMiddleware(
            app,
            asgi_app,
            get_service=get_service,
            variant=lambda headers: "partial" if wants_partial(headers) else "full",
            has_session=has_session,
            release=release,
            recent_bytes=recent_bytes,
        )

    wrap_asgi(app, view_cache)

