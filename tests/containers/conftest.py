"""The real image, built from the Dockerfile by podman, and the containers the tests run.

The base images come from `tests.support.stand_in_images` (pulled, or built once per machine
where no registry answers); the project's image is built once per test session, with the
engine's layer cache, as `docker build` would.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from app.settings import PROJECT_ROOT
from tests.support import stand_in_images
from tests.support.memcached import free_port
from tests.support.podman import podman

IMAGE = "localhost/tasklist:test"
START_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def image() -> str:
    """The project's image, built from the Dockerfile against the base images it names."""
    stand_in_images.ensure()
    podman(
        "build", "--format", "docker", "--pull=never", "--tag", IMAGE, str(PROJECT_ROOT),
        timeout=900,
    )
    return IMAGE


@dataclass
class Container:
    """A container of the image on the host's network, serving on `port`."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self, field: str) -> str:
        return podman("inspect", self.name, "--format", f"{{{{.State.{field}}}}}").stdout.strip()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.state("Running") != "true":
                raise AssertionError(f"{self.name} exited:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no /healthz within {START_TIMEOUT} s:\n{self.logs()}")


def run_once(image: str, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` of `command` in the image on the host's network."""
    return podman(
        "run", "--rm", "--network=host", *_env_options(env), image, *command, timeout=120
    )


@contextmanager
def running(image: str, env: dict[str, str]) -> Iterator[Container]:
    """The image's own command, detached on the host's network (so it reaches the test
    databases and memcached on 127.0.0.1), on a free port; removed afterwards."""
    container = Container(f"tasklist-test-{uuid.uuid4().hex[:8]}", free_port())
    podman(
        "run", "--detach", "--name", container.name, "--network=host",
        *_env_options({**env, "PORT": str(container.port)}), image,
    )
    try:
        container.wait_until_serving()
        yield container
    finally:
        podman("rm", "--force", "--time=0", container.name, check=False)


def _env_options(env: dict[str, str]) -> list[str]:
    return [f"--env={name}={value}" for name, value in env.items()]
