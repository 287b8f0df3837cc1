"""Podman for the container tests: the engine `make test` installs from Debian (podman, runc,
netavark), run with the project's settings for these machines (`containers.conf`, named by
`CONTAINERS_CONF`), its Docker-compatible API on a socket of the caller's own (for
docker-compose), and the health checks podman cannot schedule here.

Plain helpers, no fixtures: tests/containers/conftest.py owns the lifetimes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
# `make test` installs these (the Makefile's TEST_SYSTEM_PACKAGES); a missing one fails the
# container tests with this message, never skips them.
NOT_INSTALLED = (
    "{tool} is not installed: run `make test` (it apt-installs podman, runc, netavark, "
    "aardvark-dns, iptables, mmdebstrap and docker-compose) or apt-get install them"
)


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.fail(NOT_INSTALLED.format(tool=name), pytrace=False)
    return found


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with podman's settings for these machines (unless the
    caller names a `CONTAINERS_CONF` of its own), plus `extra`."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    env.update(extra)
    return env


def podman(
    *args: str, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; with `check`, a non-zero exit fails with podman's output."""
    result = subprocess.run(
        [tool("podman"), *args], env=environment(), capture_output=True, text=True,
        timeout=timeout, input=input, check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


@contextmanager
def api_service(socket: Path) -> Iterator[str]:
    """`podman system service` on `socket` (a path of the caller's own), for as long as the
    block runs; yields the `DOCKER_HOST` that points docker-compose at it."""
    service = subprocess.Popen(
        [tool("podman"), "system", "service", "--time=0", f"unix://{socket}"],
        env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                assert service.stderr is not None
                raise AssertionError(f"podman system service did not start: "
                                     f"{service.stderr.read().decode() if service.poll() else ''}")
            time.sleep(0.05)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        if service.stderr is not None:
            service.stderr.close()
        socket.unlink(missing_ok=True)


@contextmanager
def health_checks(containers: Callable[[], Sequence[str]], every: float = 1.0) -> Iterator[None]:
    """Run the HEALTHCHECK of each of `containers()` every `every` seconds while the block
    runs: podman 4.3 schedules them with systemd timers, and without systemd (these
    machines) a container's health stays "starting" unless something runs them, which
    compose's `service_healthy` conditions wait on. Docker runs them itself."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for container in containers():
                # A container without a health check, or one that is gone, answers non-zero.
                podman("healthcheck", "run", container, check=False, timeout=30)
            stop.wait(every)

    thread = threading.Thread(target=loop, name="podman-health-checks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def project_containers(project: str) -> list[str]:
    """The ids of the containers docker-compose made for `project` (running or not)."""
    listed = podman(
        "ps", "--all", "--filter", f"label=com.docker.compose.project={project}",
        "--format", "{{.ID}}", check=False,
    )
    return listed.stdout.split()
