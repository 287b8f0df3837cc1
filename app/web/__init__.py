"""The HTML task list (HTTP only: parse the form, call the tasks service, render)."""

from quart import Blueprint

bp = Blueprint("web", __name__)

from app.web import stats, views  # noqa: E402,F401  (registers the routes)
