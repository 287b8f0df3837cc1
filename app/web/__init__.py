"""The HTML task list (HTTP only: parse the form, call the tasks service, render)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from quart import Blueprint, current_app, url_for

bp = Blueprint("web", __name__)


@cache
def content_version(path: Path) -> str | None:
    """A short sha256 of the file, read once per process (a deploy starts new ones);
    None when the file is missing, so a page still renders before `make assets`."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except FileNotFoundError:
        return None


@bp.app_template_global()
def static_url(filename: str) -> str:
    """The URL of a static file with its content hash in the query string: a new version
    of the file is a new URL, so browsers never keep the old one for the cache's 12 h."""
    folder = Path(current_app.static_folder or "static")
    return url_for("static", filename=filename, v=content_version(folder / filename))


from app.web import stats, views  # noqa: E402,F401  (registers the routes)
