"""The README's PythonAnywhere guide says nothing the repository does not do: its `.env` is
read as it says (the MySQL URL PythonAnywhere hands out, to asyncmy in utf8mb4), the files
and tools it names exist, and its site command serves the app on the Unix socket the
platform passes in `DOMAIN_SOCKET`."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
from dotenv import dotenv_values
from sqlalchemy.engine import make_url

from app.settings import PROJECT_ROOT as ROOT
from app.settings import Settings


def guide() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Deploy to PythonAnywhere\n", 1)[1].split("\n## ", 1)[0]


def dotenv_of_guide() -> dict[str, str]:
    body = re.search(r"cat > \.env <<'END'\n(.*?)\nEND\n", guide(), re.S)
    assert body, "the guide writes .env with a quoted heredoc"
    return {k: v or "" for k, v in dotenv_values(stream=io.StringIO(body[1])).items()}


def site_command() -> str:
    line = next(line for line in guide().splitlines() if line.startswith("pa website create"))
    return shlex.split(line)[shlex.split(line).index("--command") + 1]


def test_the_guides_env_names_pythonanywheres_mysql_and_is_read_as_it_says() -> None:
    settings = Settings.from_env(dotenv_of_guide())
    url = make_url(settings.database_url)
    assert url.drivername == "mysql+asyncmy" and url.query["charset"] == "utf8mb4"
    assert (url.host, url.database) == ("alice.mysql.pythonanywhere-services.com", "alice$tasks")
    assert settings.memcache_servers == ("mc1.example.net:11211",)
    assert (settings.memcache_username, settings.memcache_password) == ("user", "secret")
    assert not settings.development


def test_the_files_and_tools_the_guide_names_exist() -> None:
    text = guide()
    for name in ("requirements.txt", "hypercorn.toml", "app/serve.py", "alembic.ini"):
        assert (ROOT / name).exists(), name
    assert ".venv/bin/alembic upgrade head" in text
    assert json.loads((ROOT / "package.json").read_text())["scripts"]["build"]
    assert "-m app.serve" in site_command()


def test_the_site_command_serves_healthz_on_the_domain_socket(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "tasklist").symlink_to(ROOT)
    socket = tmp_path / "site.sock"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "RDS_"))}
    env = {
        **environ,
        "HOME": str(tmp_path / "home"),
        "DOMAIN_SOCKET": str(socket),
        "APP_ENV": "development",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'site.sqlite3'}",
        "MEMCACHIER_SERVERS": "",
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        ["bash", "-c", site_command()], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as client:
            deadline = time.monotonic() + 20
            while True:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "the site did not answer on its socket"
                try:
                    response = client.get("http://site/healthz")
                    break
                except httpx.TransportError:  # not listening yet
                    time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
