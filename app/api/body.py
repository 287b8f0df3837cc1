"""A strict JSON body for the API: 415 for another content type, 400 for malformed JSON or
invalid UTF-8, 413 over the size limit, 422 (via quart-schema's error) for a body that
does not fit the model."""

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


def json_body(model: type[BaseModel]) -> Callable:
    """Validate the JSON body against `model` and pass it to the view as `data`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not request.is_json:
                raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")
            raw = await request.get_data(cache=True)
            try:
                document = json.loads(raw)
            except UnicodeDecodeError:
                raise BadRequest("The body is not valid UTF-8.") from None
            except ValueError as error:
                raise BadRequest(f"The body is not valid JSON: {error}.") from None
            try:
                data = model.model_validate(document)
            except ValidationError as error:
                raise RequestSchemaValidationError(error) from None
            return await view(*args, data=data, **kwargs)

        # Lets quart-schema describe the body in /openapi.json.
        setattr(wrapper, QUART_SCHEMA_REQUEST_ATTRIBUTE, (model, DataSource.JSON))
        return wrapper

    return decorator
