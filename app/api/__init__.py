"""The JSON API at /api (HTTP only: parse, call the tasks service, render)."""

from quart import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from app.api import stats, tasks  # noqa: E402,F401  (registers the routes)
