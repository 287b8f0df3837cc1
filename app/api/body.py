"""A strict JSON body for the API: 415 for another content type, 400 for malformed JSON,
invalid UTF-8 or nesting too deep to parse, 413 over the size limit, 422 (via quart-schema's
error) for a body that does not fit the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from quart import Request, request
from quart_schema import validate_request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from app.api.openapi import View, add_problems


class StrictJSONRequest(Request):
    """Quart's request, reading a JSON body with `parse_json`: Quart's own `get_json`
    answers invalid UTF-8 with a 500 and too deep a nesting with a bare 400."""

    async def get_json(
        self, force: bool = False, silent: bool = False, cache: bool = True
    ) -> Any:
        if not (force or self.is_json):
            return None
        raw = await self.get_data(cache=cache, as_text=False, parse_form_data=False)
        try:
            return parse_json(raw)
        except BadRequest:
            if silent:
                return None
            raise


def json_body(model: type[Any]) -> Callable[[View], View]:
    """quart-schema's `validate_request(model)`: the body, validated, goes to the view as
    `data` and is described in /openapi.json. A body of another type gets 415 (quart-schema
    would validate it as JSON null)."""

    def decorator(view: View) -> View:
        validated: View = validate_request(model)(view)

        @wraps(validated)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not request.is_json:
                raise UnsupportedMediaType(
                    "Send the body as JSON (Content-Type: application/json)."
                )
            return await validated(*args, **kwargs)

        add_problems(wrapper, 400, 413, 415, 422)
        return wrapper

    return decorator


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`, or `BadRequest` saying what is wrong with it.

    JSON on the wire is UTF-8 (RFC 8259, section 8.1), so the body is decoded as exactly
    that: `json.loads(bytes)` would guess UTF-16 or UTF-32 too. A leading byte order mark
    is ignored, as the RFC allows."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8.") from None
    try:
        return json.loads(text)
    except RecursionError:
        # The parser recurses once per nesting level; a body well under the size limit
        # can nest deeper than the interpreter's stack allows.
        raise BadRequest("The body is nested too deeply.") from None
    except ValueError as error:
        raise BadRequest(f"The body is not valid JSON: {error}.") from None
