"""This app from a checkout of it (this repository by default, or another one, e.g. a git
worktree of an older commit), served as production serves it.

A checkout without its own `.venv` uses this one's binaries, run in the checkout with it
first on `PYTHONPATH`, so that its own `app` package is the one imported (this venv's
editable install of the project comes after `sys.path`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT, Server

THIS_BIN = Path(sys.executable).parent  # .venv/bin: the benchmarks run under .venv/bin/python
DEFAULT_RECENT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Checkout:
    root: Path = ROOT

    @property
    def bin(self) -> Path:
        own = self.root / ".venv" / "bin"
        return own if (own / "hypercorn").exists() else THIS_BIN

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path}

    def server(self, name: str, port: int, env: dict[str, str], log: Path,
               workers: int | None = None) -> Server:
        """`hypercorn --config hypercorn.toml` (its workers unless `workers`), in the
        checkout, configured by `env` only."""
        argv = [str(self.bin / "hypercorn"), "--config", "hypercorn.toml",
                "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers)] if workers else []
        argv.append("app:create_app()")
        return Server(name, argv, port, {**env, **self.env()}, log, cwd=self.root)

    def migrate(self, database_url: str) -> None:
        """`alembic upgrade head` of the checkout on `database_url`."""
        done = subprocess.run([str(self.bin / "alembic"), "upgrade", "head"], cwd=self.root,
                              env={**os.environ, **self.env(), "DATABASE_URL": database_url},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"alembic upgrade head failed in {self.root}:\n{done.stderr}")

    def python(self, code: str) -> str:
        """What `code` prints when run by the checkout's Python on its own `app`."""
        done = subprocess.run([str(self.bin / "python"), "-c", code], cwd=self.root,
                              env={**os.environ, **self.env()}, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{code!r} failed in {self.root}:\n{done.stderr}")
        return done.stdout.strip()

    def recent_bytes(self) -> int:
        """The checkout's default CACHE_RECENT_BYTES (its settings module's), if it has one."""
        try:
            return int(self.python("from app.settings import Settings; "
                                   "print(Settings.cache_recent_bytes)"))
        except (RuntimeError, ValueError):
            return DEFAULT_RECENT_BYTES

    def describe(self) -> str:
        """`ROOT at 1a2b3c4` (`, with uncommitted changes` when there are some)."""
        def git(*args: str) -> str:
            done = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                                  text=True)
            return done.stdout.strip()

        commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "app", "templates")
        return f"{self.root} at {commit}" + (", with uncommitted changes" if dirty else "")
