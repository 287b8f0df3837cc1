"""The HTML task list (HTTP only: parse the form, call the tasks service, render)."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

from markupsafe import Markup
from quart import Blueprint, current_app, request, url_for

from app.tasks.notes import render_notes
from app.tasks.service import PAGE_SIZE

bp = Blueprint("web", __name__)
# The summary says "More than <page_size> tasks" when a page does not show them all.
bp.record_once(lambda state: state.app.jinja_env.globals.update(page_size=PAGE_SIZE))


@cache
def content_version(path: str) -> str | None:
    """A short sha256 of the file, read once per process (a deploy starts new ones);
    None when the file is missing, so a page still renders before `make assets`."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except FileNotFoundError:
        return None


@bp.app_template_global()
def static_url(filename: str) -> str:
    """The URL of a static file with its content hash in the query string: a new version
    of the file is a new URL, so browsers never keep the old one for the cache's 12 h."""
    version = content_version(os.path.join(current_app.static_folder or "static", filename))
    return _static_url(filename, version, request.root_path)


@cache
def _static_url(filename: str, version: str | None, root_path: str) -> str:
    # Once per file, version and mount point: a page links three.
    return url_for("static", filename=filename, v=version)


@bp.app_template_filter("markdown")
def markdown(source: str) -> Markup:
    """Task notes as sanitised HTML (`app.tasks.notes.render_notes`)."""
    return Markup(render_notes(source))


@bp.app_template_global()
def page_url(endpoint: str) -> str:
    """`url_for(endpoint)` of a route that takes no arguments, built once per process and
    mount point: a page links several, and a `url_for` costs more than the rest of a link."""
    return _page_url(endpoint, request.root_path)


@cache
def _page_url(endpoint: str, root_path: str) -> str:
    return url_for(endpoint)


from app.web import metrics, stats, views  # noqa: E402,F401  (registers the routes)
