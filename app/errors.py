"""Error responses: RFC 9457 problem+json under `/api`, pages in the site's layout elsewhere."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from app.db import DatabaseUnavailable
from app.htmx import add_vary, wants_partial
from app.templating import render

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DATABASE_DOWN = "The database is unavailable; please try again in a moment."


def wants_problem() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def problem(status: int, detail: str | None = None, **extra: Any) -> Response:
    """An RFC 9457 problem document with the standard members plus `extra`."""
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase}
    body["status"] = status
    if detail:
        body["detail"] = detail
    body["instance"] = request.path
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def validation_errors(error: Exception) -> list[dict[str, Any]]:
    """Field errors as `[{"loc": [...], "msg": ..., "type": ...}]`, whatever raised them."""
    if isinstance(error, ValidationError):
        return [
            {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
            for item in error.errors(include_url=False, include_context=False, include_input=False)
        ]
    return [{"loc": [], "msg": str(error), "type": "invalid"}]


async def error_page(status: int, detail: str | None = None) -> Response:
    if wants_problem():
        return problem(status, detail)
    if wants_partial(request.headers):
        # htmx swaps error answers too: send a flash for #flashes, not a page into a row.
        body = render(
            "_flash_messages.html", flashes=[("error", detail or HTTPStatus(status).phrase)]
        )
        response = add_vary(Response(body, status=status, mimetype="text/html"))
        response.headers.update({"HX-Retarget": "#flashes", "HX-Reswap": "innerHTML"})
        return response
    body = render(
        "errors/error.html", status=status, title=HTTPStatus(status).phrase, detail=detail
    )
    # The same URL answers htmx with the flash above: the page varies on those headers too.
    return add_vary(Response(body, status=status, mimetype="text/html"))


def init_app(app: Quart) -> None:
    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        errors = validation_errors(error.validation_error)
        detail = errors[0]["msg"] if len(errors) == 1 else "The request is not valid."
        return problem(422, detail, errors=errors)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        response = await error_page(error.code or 500, error.description)
        if error.code == 405 and (allowed := getattr(error, "valid_methods", None)):
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(DatabaseUnavailable)
    async def database_unavailable(error: DatabaseUnavailable) -> Response:
        log.warning("database unavailable: %s", error)
        response = await error_page(503, DATABASE_DOWN)
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return await error_page(500, "Something went wrong on our side.")
