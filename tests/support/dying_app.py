"""An app that loads in `app.serve`'s master but makes every worker die as it starts (for
the test of a master that stops when its workers keep dying)."""

from __future__ import annotations

import multiprocessing

from quart import Quart

from app import create_app as create_real_app


def create_app() -> Quart:
    if multiprocessing.parent_process() is not None:
        raise SystemExit(3)  # a worker: die before serving
    return create_real_app()
