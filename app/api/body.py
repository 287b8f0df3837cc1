"""A strict JSON body for the API: 415 for another content type, 400 for malformed JSON,
invalid UTF-8 or nesting too deep to parse, 413 over the size limit, 422 (via quart-schema's
error) for a body that does not fit the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import request
from quart_schema import DataSource, RequestSchemaValidationError
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from app.api.openapi import add_problems


def json_body(model: type[BaseModel]) -> Callable:
    """Validate the JSON body against `model` and pass it to the view as `data`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not request.is_json:
                raise UnsupportedMediaType(
                    "Send the body as JSON (Content-Type: application/json)."
                )
            document = parse_json(await request.get_data(cache=True))
            try:
                data = model.model_validate(document)
            except ValidationError as error:
                raise RequestSchemaValidationError(error) from None
            return await view(*args, data=data, **kwargs)

        # Lets quart-schema describe the body in /openapi.json, and the answers above.
        setattr(wrapper, QUART_SCHEMA_REQUEST_ATTRIBUTE, (model, DataSource.JSON))
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
