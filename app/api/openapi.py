"""/openapi.json as the server answers: quart-schema's description of each route, plus what
its decorators cannot say.

- the errors an operation can answer (`@problems(...)`, `json_body`'s own), problem+json
  with its schema under /api; 413 everywhere (`app.limits` reads every body), 403 and 429
  on every unsafe method (the cross-origin check and the write limit run on every route);
- 304 (and `If-None-Match`, `ETag`) on views the view cache serves; answers without a body
  (`@empty_response(204, ...)`);
- response headers (`@headers(...)`), at the level OpenAPI reads them;
- request bodies that are required (quart-schema leaves `required` out, so "no body at
  all" would be a valid request that is answered 415).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from pydantic import MISSING, BaseModel
from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from app.errors import PROBLEM_JSON
from app.webcache.declaration import VIEW_CACHE_ATTRIBUTE

type View = Callable[..., Any]

PROBLEMS_ATTRIBUTE = "_api_problems"
EMPTY_ATTRIBUTE = "_api_empty_responses"
HEADERS_ATTRIBUTE = "_api_headers"
REF = "#/components/schemas/{model}"
SAFE_METHODS = frozenset({"get", "head", "options", "trace"})

ERROR_DESCRIPTIONS = {
    400: "The body is not JSON: malformed, not UTF-8, or nested too deeply.",
    401: "The operator credential (`OPERATOR_TOKEN`) is missing or wrong: send it as a Bearer "
    "token or as the password of HTTP Basic.",
    403: "Refused: a browser sent this unsafe request from another site (`Sec-Fetch-Site`, "
    "or `Origin` without it).",
    404: "There is no task with this id.",
    413: "The body is larger than {limit} bytes.",
    415: "The body is not `application/json`.",
    422: "The request does not fit the schema; `errors` says what is wrong with each field.",
    429: "This client made its `WRITE_RATE_LIMIT` writes this minute: nothing was stored; try "
    "again after `Retry-After` seconds.",
    503: "The database is unavailable; try again after `Retry-After` seconds.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds.", "schema": {"type": "integer"}}}
ABOUT = (
    "Every error under `/api` is an RFC 9457 `application/problem+json` document, also an "
    "unknown route (404) and a method a route does not take (405, with `Allow`)."
)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str | MISSING = MISSING
    instance: str


class ValidationProblem(Problem):
    """An RFC 9457 problem document with the request's field errors."""

    errors: list[FieldError]


def problems(*statuses: int) -> Callable[[View], View]:
    """Document the problem+json answers a view can give besides its own success."""

    def decorator(view: View) -> View:
        add_problems(view, *statuses)
        return view

    return decorator


def add_problems(view: View, *statuses: int) -> None:
    known: frozenset[int] = getattr(view, PROBLEMS_ATTRIBUTE, frozenset())
    setattr(view, PROBLEMS_ATTRIBUTE, known | frozenset(statuses))


def empty_response(status: int, description: str) -> Callable[[View], View]:
    """Document an answer without a body (quart-schema's always has a JSON one)."""

    def decorator(view: View) -> View:
        setattr(view, EMPTY_ATTRIBUTE, {**getattr(view, EMPTY_ATTRIBUTE, {}), status: description})
        return view

    return decorator


def headers(status: int, **descriptions: str) -> Callable[[View], View]:
    """Document response headers (`Location="..."`; underscores become dashes)."""

    def decorator(view: View) -> View:
        known = dict(getattr(view, HEADERS_ATTRIBUTE, {}))
        named = {name.replace("_", "-"): text for name, text in descriptions.items()}
        known[status] = {**known.get(status, {}), **named}
        setattr(view, HEADERS_ATTRIBUTE, known)
        return view

    return decorator


class ApiDescription(OpenAPIProvider):
    """quart-schema's OpenAPI provider, completed as the module says."""

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        schema["info"]["description"] = ABOUT
        for model in (Problem, ValidationProblem):
            schema["components"]["schemas"].update(_components(model))
        return schema

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in operations.items():
                operation = copy.deepcopy(operation)
                operations[method] = self._complete(operation, view, method, rule.endpoint)
        return paths, components

    def _complete(
        self, operation: dict[str, Any], view: View, method: str, endpoint: str
    ) -> dict[str, Any]:
        responses: dict[int, dict[str, Any]] = operation["responses"]
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
        if getattr(view, VIEW_CACHE_ATTRIBUTE, None) is not None:
            etag = {"ETag": {"description": "The representation's version.", **_STRING}}
            operation["parameters"].append(_IF_NONE_MATCH)
            responses[200].setdefault("headers", {}).update(etag)
            responses[304] = {"description": "Not modified: `If-None-Match` names the "
                              "current `ETag`.", "headers": etag}
        for status, description in getattr(view, EMPTY_ATTRIBUTE, {}).items():
            responses[status] = {"description": description}
        statuses = {413, *getattr(view, PROBLEMS_ATTRIBUTE, ())}  # `app.limits`: every route
        if method not in SAFE_METHODS:
            statuses |= {403, 429}  # the cross-origin check, the write limit
        for status in sorted(statuses):
            responses[status] = self._error(status, api=endpoint.startswith("api."))
        for status, named in getattr(view, HEADERS_ATTRIBUTE, {}).items():
            documented = responses.setdefault(status, {"description": HTTPStatus(status).phrase})
            documented.setdefault("headers", {}).update(
                {name: {"description": text, **_STRING} for name, text in named.items()}
            )
        return operation

    def _error(self, status: int, *, api: bool) -> dict[str, Any]:
        """A problem document under /api, a page in the site's layout elsewhere."""
        model = ValidationProblem if status == 422 else Problem
        limit = self._app.config["MAX_CONTENT_LENGTH"]
        content = (
            {PROBLEM_JSON: {"schema": {"$ref": REF.format(model=model.__name__)}}}
            if api else {"text/html": {"schema": {"type": "string"}}}
        )
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS[status].format(limit=limit),
            "content": content,
        }
        if status in (429, 503):
            response["headers"] = RETRY_AFTER
        return response


_STRING = {"schema": {"type": "string"}}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "description": "An `ETag` this client has: 304 if it is still current.",
    "schema": {"type": "string"},
}


def _components(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema and the ones it refers to, as components."""
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    return {**schema.pop("$defs", {}), model.__name__: schema}
