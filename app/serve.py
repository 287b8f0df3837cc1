"""`python -m app.serve`: hypercorn, with a master that replaces a worker that dies.

It reads the hypercorn arguments deploys use (`--config FILE.toml`, `--bind` (repeatable),
`--workers`, `--worker-class`, the app) into hypercorn's `Config` and serves with hypercorn's
own workers. The master loads the app once before any worker starts, so a refusal to start
exits non-zero with the reason, before a port is taken; serves with one worker on the
in-process cache, whatever is asked for, and logs it; replaces a worker that dies while the
others serve, and exits 1 when new ones keep dying before they are ready; on SIGTERM or
SIGINT lets every worker drain (`graceful_timeout`) and close its pools, and exits 0 when
all did. A worker sent SIGTERM itself drains too (docs/OPERATIONS.md, "The server process
(`app.serve`)").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from hypercorn.utils import load_application

from app.settings import Settings, SettingsError

log = logging.getLogger("tasklist.serve")

# After this many workers in a row died before they were ready (the app's startup done),
# the master stops instead of restarting workers in a tight loop.
BOOT_FAILURES = 3
# Time a worker has, past the graceful timeout, to run the app's shutdown and exit.
SHUTDOWN_GRACE = 5.0


def main(argv: list[str] | None = None) -> None:
    sys.exit(supervise(parse_config(argv)))


def parse_config(argv: list[str] | None = None) -> Config:
    """hypercorn's `Config` from the command line: the TOML file's settings, then the
    options given, as hypercorn's own command line reads them."""
    parser = argparse.ArgumentParser(
        prog="python -m app.serve", description="Serve the app with hypercorn's workers."
    )
    parser.add_argument("application", help="the app, as path.to.module:factory()")
    parser.add_argument("-c", "--config", help="a hypercorn TOML file (hypercorn.toml)")
    parser.add_argument("-b", "--bind", action="append", default=[],
                        help="HOST:PORT or unix:PATH; repeat for several")
    parser.add_argument("-w", "--workers", type=int, help="worker processes")
    parser.add_argument("-k", "--worker-class", choices=("asyncio", "uvloop"))
    args = parser.parse_args(argv)
    config = Config.from_toml(args.config) if args.config else Config()
    config.application_path = args.application
    if args.bind:
        config.bind = args.bind
    if args.workers is not None:
        config.workers = args.workers
    if args.worker_class is not None:
        config.worker_class = args.worker_class
    return config


def supervise(config: Config) -> int:
    _log_to_stderr()
    if config.worker_class not in ("asyncio", "uvloop"):
        log.error("worker_class %r is not supported: use asyncio or uvloop", config.worker_class)
        return 2
    settings = _load(config)
    if isinstance(settings, str):
        log.error("refusing to start: %s", settings)
        return 1
    if config.workers > 1 and not settings.memcache_servers:
        log.warning(
            "serving with 1 worker on the in-process cache, not %d: MEMCACHIER_SERVERS is "
            "not set, and several workers would each keep their own cache and sessions; "
            "set it to a memcached server to run %d",
            config.workers, config.workers,
        )
        config.workers = 1
    return Master(config).run()


def _load(config: Config) -> Settings | str:
    """The settings the app will run with, or why it cannot be served with `config`.
    Loading the app here runs `create_app`, which reads and checks every setting (and
    opens nothing)."""
    if config.workers < 1:
        return "--workers must be at least 1"
    try:
        load_application(config.application_path, config.wsgi_max_body_size)
        return Settings.from_env()  # after create_app has read `.env`
    except SettingsError as error:
        return str(error)
    except Exception as error:  # an import error, a typo in the app path: say which
        return f"{config.application_path} does not load: {error!r}"


class Master:
    """Keeps `config.workers` hypercorn workers serving the sockets it opened."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.context = get_context("spawn")  # as hypercorn: no state forked from the master
        self.sockets = config.create_sockets()
        self.shutdown = self.context.Event()
        self.workers: list[Worker] = []
        self.stopping = False
        self.boot_failures = 0

    def run(self) -> int:
        # Workers inherit an ignored SIGINT (a terminal's Ctrl-C reaches the whole
        # group): the master alone decides when they stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _ in range(self.config.workers):
            self._start_worker()
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        while not self.stopping:
            wait([worker.process.sentinel for worker in self.workers], timeout=1.0)
            for worker in [w for w in self.workers if not w.process.is_alive()]:
                self.workers.remove(worker)
                if not self.stopping and not self._replace(worker):
                    self._stop()
        code = self._drain()
        self._close_sockets()
        return code if self.boot_failures < BOOT_FAILURES else 1

    def _start_worker(self) -> None:
        ready = self.context.Event()
        process = self.context.Process(
            target=serve_worker,
            kwargs={
                "config": self.config,
                "sockets": self.sockets,
                "shutdown": self.shutdown,
                "ready": ready,
            },
        )
        process.daemon = self.config.daemon  # ended with the master, should it crash
        process.start()
        self.workers.append(Worker(process, ready, time.monotonic()))
        log.info("worker %s started", process.pid)

    def _replace(self, dead: Worker) -> bool:
        """Start a worker in place of `dead`; False when workers keep dying at start."""
        dead.process.join()
        lived = time.monotonic() - dead.started
        log.warning(
            "worker %s exited (%s) after %.1f s",
            dead.process.pid,
            _describe(dead.process.exitcode),
            lived,
        )
        self.boot_failures = 0 if dead.ready.is_set() else self.boot_failures + 1
        if self.boot_failures >= BOOT_FAILURES:
            log.error("%d workers in a row died before they were ready to serve; stopping",
                      self.boot_failures)
            return False
        self._start_worker()
        return True

    def _stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("%s: finishing the requests in flight, then exiting",
                     signal.Signals(signum).name)
        self.stopping = True
        self.shutdown.set()

    def _drain(self) -> int:
        """Wait for the workers to drain and exit; 0 when they all exited cleanly."""
        deadline = time.monotonic() + self.config.graceful_timeout + SHUTDOWN_GRACE
        code = 0
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error("worker %s did not exit in time; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()
            if worker.process.exitcode != 0:
                code = 1
        return code

    def _close_sockets(self) -> None:
        for sock in (*self.sockets.secure_sockets, *self.sockets.insecure_sockets):
            sock.close()


class Worker:
    """A worker process; `ready` is set once its app has started up (lifespan)."""

    __slots__ = ("process", "ready", "started")

    def __init__(self, process: BaseProcess, ready: Event, started: float) -> None:
        self.process = process
        self.ready = ready
        self.started = started


def serve_worker(config: Config, sockets: Sockets, shutdown: Event, ready: Event) -> None:
    """One worker process: hypercorn's asyncio or uvloop worker, stopped gracefully by the
    master's event, by a SIGTERM of its own, or by the master going away."""
    app = load_application(config.application_path, config.wsgi_max_body_size)
    if isinstance(app, ASGIWrapper):
        app.app = ReportStartup(app.app, ready)
    master = os.getppid()
    terminated = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True  # a flag only: the event's lock is not safe in a signal handler

    signal.signal(signal.SIGTERM, on_sigterm)

    async def shutdown_trigger() -> None:
        # Polled, as hypercorn polls its own event: a process-shared event, a flag, a pid.
        while not (terminated or shutdown.is_set() or os.getppid() != master):  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    loop_factory = None
    if config.worker_class == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(worker_serve(app, config, sockets=sockets, shutdown_trigger=shutdown_trigger))


class ReportStartup:
    """ASGI middleware: set `ready` when the app reports its lifespan startup complete."""

    def __init__(self, app: ASGIFramework, ready: Event) -> None:
        self.app = app
        self.ready = ready

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_reporting(message: ASGISendEvent) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.ready.set()
            await send(message)

        await self.app(scope, receive, send_reporting)


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def _log_to_stderr() -> None:
    """The master's own lines, formatted as hypercorn's (the app may reconfigure
    `tasklist` logging once it loads)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
                              "%Y-%m-%d %H:%M:%S %z")
        )
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


if __name__ == "__main__":
    main()
