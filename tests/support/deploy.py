"""The deploy files as the platforms read them: the Dockerfile's stages, its runtime
environment and CMD, the Procfile's processes. For the tests that check those files and
the tests that run their commands outside a container."""

from __future__ import annotations

import json
import shlex

import pytest

from app.settings import PROJECT_ROOT as ROOT


def dockerfile_stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """The global ARG defaults and, per stage, its (INSTRUCTION, arguments) in order,
    with continuation lines joined and comments dropped, as the builder reads them."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
        elif keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
    return global_args, stages


def runtime_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[1][-1]


def stage_named(name: str) -> list[tuple[str, str]]:
    for stage in dockerfile_stages()[1]:
        if stage[0][1].lower().endswith(f" as {name}"):
            return stage
    pytest.fail(f"the Dockerfile has no stage named {name!r}")


def environment_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, value = item.split("=", 1)
                env[name] = value
    return env


def image_command() -> list[str]:
    """The runtime stage's CMD (JSON form), as the container runs it."""
    cmd = [arguments for keyword, arguments in runtime_stage() if keyword == "CMD"]
    assert len(cmd) == 1, "the runtime stage has one CMD"
    command: list[str] = json.loads(cmd[0])
    return command


def image_environment() -> dict[str, str]:
    """The runtime stage's ENV, but PATH (outside a container, the venv is .venv)."""
    return {k: v for k, v in environment_of(runtime_stage()).items() if k != "PATH"}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())
