"""The Elastic Beanstalk config (.ebextensions/): it parses as EB reads it (YAML), migrates
once per deploy with the Procfile's own release command, and leaves EB a Procfile whose
only process is the `web:` line. No EB runs here, so the commands are checked as text and,
where they touch the repository's files, run on a copy."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from app.settings import PROJECT_ROOT as ROOT
from app.settings import Settings
from tests.support.deploy import procfile

CONFIG = ROOT / ".ebextensions" / "tasklist.config"
ACTIVATE = "source /var/app/venv/*/bin/activate && "  # the Python platform's virtualenv


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_the_only_ebextensions_file_is_yaml_with_settings_and_commands() -> None:
    assert [path.name for path in CONFIG.parent.iterdir()] == ["tasklist.config"]
    assert set(config()) == {"option_settings", "container_commands"}


def test_migrations_run_once_per_deploy_with_the_procfiles_release_command() -> None:
    commands = config()["container_commands"]
    migrate = commands["01_migrate"]
    assert migrate["leader_only"] is True
    assert migrate["command"].removeprefix(ACTIVATE) == procfile()["release"]
    assert migrate["command"].startswith(ACTIVATE)
    assert sorted(commands)[0] == "01_migrate", "EB runs them in name order"


def test_eb_is_left_a_procfile_of_the_web_process_alone(tmp_path: Path) -> None:
    """EB keeps every Procfile line running; the release line would migrate in a loop."""
    staged = tmp_path / "Procfile"
    staged.write_text((ROOT / "Procfile").read_text())
    for name, entry in sorted(config()["container_commands"].items()):
        if name != "01_migrate":
            subprocess.run(["bash", "-c", entry["command"]], cwd=tmp_path, check=True)
    lines = [line for line in staged.read_text().splitlines() if line.strip()]
    assert lines == [f"web: {procfile()['web']}"]


def test_the_environment_serves_production_on_ebs_proxy_port_and_checks_healthz() -> None:
    options = config()["option_settings"]
    env = options["aws:elasticbeanstalk:application:environment"]
    assert env == {"APP_ENV": "production", "PORT": "8000", "PYTHONUNBUFFERED": "1"}
    assert "$PORT" in procfile()["web"]
    assert options["aws:elasticbeanstalk:application"]["Application Healthcheck URL"] == (
        "/healthz"
    )
    # No secret in the file: production refuses to start until `eb setenv SECRET_KEY=...`.
    assert "SECRET_KEY" not in env
    assert Settings.from_env({**env, "SECRET_KEY": "set by eb setenv"}).env == "production"
