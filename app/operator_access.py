"""Who may see the operator surfaces (`/stats`, `/api/stats`, `/metrics`).

The credential is `OPERATOR_TOKEN`, sent as `Authorization: Bearer <token>` or as the
password of HTTP Basic with any user name, so that a browser's own login prompt works for
the dashboard (and its htmx polling, which the browser sends the same credentials with).
Without a token the surfaces are open in development and absent (404) in production.
A wrong or missing credential gets 401 with a challenge. Tokens are compared in constant
time, and no answer of these surfaces is stored by any cache (`Cache-Control: no-store`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import cast

from quart import Quart, Response, current_app, make_response, request
from werkzeug.exceptions import NotFound

from app.errors import error_page
from app.settings import Settings

EXTENSION_KEY = "tasklist.operators"
REALM = "tasklist operator"
CHALLENGES = (f'Basic realm="{REALM}", charset="UTF-8"', f'Bearer realm="{REALM}"')
NEEDS_CREDENTIAL = (
    "This page is for the app's operators: log in with the operator token "
    "(as the password, any user name), or send it as a Bearer token."
)


def presented_token(authorization: str | None) -> str | None:
    """The token in an `Authorization` header: a Bearer token, or Basic's password."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, colon, password = decoded.partition(":")
        return password if colon else None
    return None


@dataclass(frozen=True)
class OperatorAccess:
    """The operator credential, as the settings give it."""

    token: str = field(repr=False)
    development: bool

    @property
    def surfaces_exist(self) -> bool:
        """False in production without a token: the surfaces answer 404."""
        return bool(self.token) or self.development

    def grants(self, authorization: str | None) -> bool:
        """Whether this `Authorization` header opens the operator surfaces."""
        if not self.token:
            return self.development
        presented = presented_token(authorization)
        if presented is None:
            return False
        # Digests of equal length: the comparison's time says nothing of the token's length.
        given = hashlib.sha256(presented.encode()).digest()
        expected = hashlib.sha256(self.token.encode()).digest()
        return hmac.compare_digest(given, expected)


def is_operator() -> bool:
    """Whether the current request may see the operator surfaces (for links to them)."""
    access: OperatorAccess = current_app.extensions[EXTENSION_KEY]
    return access.grants(request.headers.get("Authorization"))


def operator_only[**P](
    view: Callable[P, Awaitable[object]],
) -> Callable[P, Awaitable[Response]]:
    """Guard a view: 404 when the surfaces are off, 401 without the credential."""

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> Response:
        access: OperatorAccess = current_app.extensions[EXTENSION_KEY]
        if not access.surfaces_exist:
            raise NotFound()
        if access.grants(request.headers.get("Authorization")):
            # Quart's make_response is typed with werkzeug's Response; it makes the app's own.
            response = cast(Response, await make_response(await view(*args, **kwargs)))
        else:
            response = await error_page(401, NEEDS_CREDENTIAL)
            for challenge in CHALLENGES:
                response.headers.add("WWW-Authenticate", challenge)
        response.headers["Cache-Control"] = "no-store"
        return response

    return guarded


def init_app(app: Quart, settings: Settings) -> None:
    app.extensions[EXTENSION_KEY] = OperatorAccess(settings.operator_token, settings.development)
    app.add_template_global(is_operator)  # the nav links the dashboard for operators only
