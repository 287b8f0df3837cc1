"""Server-side sessions in the cache, so that the cookie carries no data: `CacheSessionInterface`.

The cookie holds only a random id, signed with ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still
verify), timed out after ``PERMANENT_SESSION_LIFETIME`` and flagged by Quart's
``SESSION_COOKIE_*``; the data (Flask's tagged JSON) lives in the ``session`` key kind under
a hash of the id, with that lifetime as TTL. A request that does not write to the session
gets none (no cache write, no cookie). Only a first write mints an id: a cookie whose id has
no stored data is never adopted, and is deleted, as is a session that ends a request empty.
Fail open: with no client or a failing cache the session is empty, a write that cannot be
stored sets no cookie, and the request never fails. `has_session_cookie` lets a shared (view)
cache bypass requests that carry a session (docs/CACHE.md, "Sessions").
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from itsdangerous import BadSignature, TimestampSigner
from quart.sessions import SecureCookieSession, SessionInterface, SessionMixin
from quart.sessions import session_json_serializer as _serializer
from werkzeug.sansio.http import parse_cookie

from app.cache.client import CacheClient
from app.cache.keys import KeyKinds, digest

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import BaseRequestWebsocket, Response
    from werkzeug.wrappers import Response as WerkzeugResponse



class CookieFlags(TypedDict):
    httponly: bool
    domain: str | None
    path: str
    secure: bool
    samesite: str | None
    partitioned: bool


class CacheSession(SecureCookieSession):
    """A session whose data is in the cache.

    `sid` is the id of the stored data (``None`` until the first write stores some);
    `had_cookie` says the request carried a session cookie, valid or not.
    """

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        *,
        sid: str | None = None,
        had_cookie: bool = False,
    ) -> None:
        super().__init__(initial)
        self.sid = sid
        self.had_cookie = had_cookie


class CacheSessionInterface(SessionInterface):
    """Quart session interface storing the data through a `CacheClient`.

    `get_client(app)` is called at request time and returns the app's client, or ``None``
    before it exists (it is made in ``before_serving``) or when caching is off.
    """

    session_class = CacheSession
    salt = "tasklist-session-id"

    def __init__(self, get_client: Callable[[Quart], CacheClient | None]) -> None:
        self.get_client = get_client

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> CacheSession | None:
        signer = self._signer(app)
        if signer is None:
            return None  # no SECRET_KEY: Quart's null session refuses writes with a clear error
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return CacheSession()
        client = self.get_client(app)
        sid = self._unsign(app, signer, cookie)
        if client is None or sid is None:
            return CacheSession(had_cookie=True)
        entry = await client.get(_key(client, sid))
        data = _load(entry.value) if entry is not None else None
        if data is None:
            return CacheSession(had_cookie=True)
        return CacheSession(data, sid=sid, had_cookie=True)

    async def save_session(
        self, app: Quart, session: SessionMixin, response: Response | WerkzeugResponse | None
    ) -> None:
        assert isinstance(session, CacheSession)
        client = self.get_client(app)
        if session.accessed and response is not None:
            response.vary.add("Cookie")

        if not session:
            if session.sid is not None and client is not None:
                await client.delete(_key(client, session.sid))
            if session.had_cookie and response is not None:
                self._delete_cookie(app, response)
            return

        if not self.should_set_cookie(app, session) or client is None:
            return
        if response is None and session.sid is None:
            return  # a websocket cannot set the cookie that would name new data
        sid = session.sid or secrets.token_urlsafe(32)
        ttl = max(1, int(app.permanent_session_lifetime.total_seconds()))
        stored = await client.set(_key(client, sid), _serializer.dumps(dict(session)), ttl)
        if stored and response is not None:
            self._set_cookie(app, session, response, sid)

    def _set_cookie(
        self, app: Quart, session: SessionMixin, response: Response | WerkzeugResponse, sid: str
    ) -> None:
        """Send the signed session id, with Quart's cookie settings."""
        signer = self._signer(app)
        assert signer is not None  # open_session returned a CacheSession, so there is a key
        response.set_cookie(
            self.get_cookie_name(app),
            signer.sign(sid).decode("ascii"),
            expires=self.get_expiration_time(app, session),
            **self._cookie_flags(app),
        )
        response.vary.add("Cookie")

    def _cookie_flags(self, app: Quart) -> CookieFlags:
        """The cookie's attributes from Quart's config, the same to set and to delete it."""
        return {
            "httponly": self.get_cookie_httponly(app),
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "samesite": self.get_cookie_samesite(app),
            "partitioned": self.get_cookie_partitioned(app),
        }

    def _signer(self, app: Quart) -> TimestampSigner | None:
        if not app.secret_key:
            return None
        keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key]
        return TimestampSigner(
            keys, salt=self.salt, key_derivation="hmac", digest_method=hashlib.sha256
        )

    def _unsign(self, app: Quart, signer: TimestampSigner, cookie: str) -> str | None:
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            return signer.unsign(cookie, max_age=max_age).decode("ascii")
        except (BadSignature, UnicodeError):
            return None

    def _delete_cookie(self, app: Quart, response: Response | WerkzeugResponse) -> None:
        response.delete_cookie(self.get_cookie_name(app), **self._cookie_flags(app))
        response.vary.add("Cookie")


def has_session_cookie(cookie_header: str | None, cookie_name: str) -> bool:
    """True if the ``Cookie`` header has a non-empty `cookie_name` (signature not checked).

    `cookie_header` is as the server decoded it (latin-1), and parsed as Quart's
    `request.cookies` parses it, so both agree on what is there: `werkzeug.http`'s
    `parse_cookie` would decode it again as UTF-8, and raise on other bytes."""
    if not cookie_header or cookie_name not in cookie_header:
        return False
    return bool(parse_cookie(cookie_header).get(cookie_name))


def _key(client: CacheClient, sid: str) -> str:
    return client.keys.key(KeyKinds.SESSION, digest(sid))


def _load(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str):
        return None
    try:
        data = _serializer.loads(value)
    except (ValueError, TypeError, KeyError):
        return None
    return data if isinstance(data, dict) else None
