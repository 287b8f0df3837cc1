"""What `app.serve` relies on in hypercorn, checked so that a release that changes it fails
here rather than in production: its `Config` read from the project's TOML file and the
command line, and the public functions the master and its workers call."""

from __future__ import annotations

import inspect
import tomllib

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import load_application

from app.serve import parse_config
from app.settings import PROJECT_ROOT


def test_the_deploy_command_line_becomes_hypercorns_config() -> None:
    """The Procfile's and the Dockerfile's arguments."""
    config = parse_config([
        "--config", str(PROJECT_ROOT / "hypercorn.toml"), "--bind", "0.0.0.0:8000",
        "--workers", "3", "app:create_app()",
    ])
    toml = tomllib.loads((PROJECT_ROOT / "hypercorn.toml").read_text())
    assert config.bind == ["0.0.0.0:8000"]
    assert config.workers == 3
    assert config.application_path == "app:create_app()"
    for name in ("worker_class", "keep_alive_max_requests", "read_timeout", "backlog"):
        assert getattr(config, name) == toml[name], name
    assert config.graceful_timeout == toml["graceful_timeout"]


def test_without_a_file_hypercorns_defaults_hold() -> None:
    config = parse_config(["--bind", "unix:/tmp/site.sock", "-b", "[::1]:9", "x:app"])
    assert config.bind == ["unix:/tmp/site.sock", "[::1]:9"]
    assert config.workers == Config().workers


def test_the_functions_the_master_and_workers_call_keep_their_shape() -> None:
    serve = inspect.signature(worker_serve).parameters
    assert list(serve)[:2] == ["app", "config"]
    assert {"sockets", "shutdown_trigger"} <= set(serve)
    assert list(inspect.signature(load_application).parameters) == [
        "path", "wsgi_max_body_size"
    ]
    assert callable(Config.create_sockets)
