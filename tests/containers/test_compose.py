"""The compose stack, up for real: the README's "Run with Docker Compose" commands run in
order on a copy of the checkout, with docker-compose against podman's Docker API as the
README says for podman. Between `up` and `down` the test writes through one web replica and
reads through the other, spreads requests through the proxy, and kills a replica."""

from __future__ import annotations

import random
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import PROJECT_ROOT
from tests.support import stand_in_images
from tests.support.memcached import free_port
from tests.support.podman import (
    api_service,
    environment,
    health_checks,
    podman,
    project_containers,
    tool,
)

pytestmark = pytest.mark.containers

SECTION = "## Run with Docker Compose"
PODMAN_SERVICE = re.compile(r"podman system service --time=0 unix://(\S+) &")


def readme_blocks() -> list[list[str]]:
    """The section's shell blocks, each as its commands (comments dropped)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index(SECTION):].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [
        [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
        for block in blocks
    ]


def copy_of_checkout(destination: Path) -> Path:
    """The files a fresh clone of the working tree holds (tracked, and new files not
    ignored): no .env, .venv, node_modules or static/vendor of this machine's."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():  # a file deleted from the tree but not yet from the index
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return destination


def unused_subnet() -> int:
    """A third octet for 172.29.X.0/24 that no podman network uses."""
    taken = podman("network", "inspect", "--all", "--format", "{{range .Subnets}}{{.Subnet}} "
                   "{{end}}", check=False).stdout
    free = [x for x in range(100, 250) if f"172.29.{x}.0/24" not in taken]
    return random.choice(free)


@dataclass
class Stack:
    checkout: Path
    project: str
    port: int
    env: dict[str, str]
    outputs: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, command: str) -> str:
        """A README command as a user runs it in the checkout, with Compose v1 for `docker
        compose` and the test's port for the README's 8000."""
        line = command.replace("docker compose", tool("docker-compose")).replace(
            "localhost:8000", f"localhost:{self.port}"
        )
        result = subprocess.run(
            ["bash", "-c", line], cwd=self.checkout, env=self.env, capture_output=True,
            text=True, timeout=600, check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"$ {command}\n{output}"
        self.outputs[command] = output
        return output

    def web_replicas(self) -> list[str]:
        """The running web containers' addresses on the stack's network."""
        return podman(
            "ps", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", "label=com.docker.compose.service=web",
            "--format", "{{.Names}}",
        ).stdout.split()

    def address(self, container: str) -> str:
        return podman(
            "inspect", container, "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ).stdout.strip()

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = [
            *podman("ps", "--all", "--filter", label, "--format", "{{.Names}}").stdout.split(),
            *podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split(),
        ]
        networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        return found + [name for name in networks if name.startswith(f"{self.project}_")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The README's commands up to `down`, run; `down` is the module's last test (and run
    here only if something is left behind)."""
    docker, podman_setup = readme_blocks()
    service = PODMAN_SERVICE.fullmatch(podman_setup[0])
    assert service, podman_setup
    assert podman_setup[1] == f"export DOCKER_HOST=unix://{service[1]}", podman_setup
    stand_in_images.ensure()
    scratch = tmp_path_factory.mktemp("compose")
    octet = unused_subnet()
    project = f"tasklist{uuid.uuid4().hex[:8]}"
    with api_service(scratch / "podman.sock") as docker_host:
        stack = Stack(
            checkout=copy_of_checkout(scratch / "checkout"),
            project=project,
            port=free_port(),
            env=environment(
                DOCKER_HOST=docker_host,
                COMPOSE_PROJECT_NAME=project,
                TASKLIST_SUBNET=f"172.29.{octet}.0/24",
                TASKLIST_PROXY_IP=f"172.29.{octet}.10",
                WRITE_RATE_LIMIT="0",  # the test writes from one address more than it may
            ),
            outputs={},
        )
        stack.env["TASKLIST_PORT"] = str(stack.port)
        down = [command for command in docker if " down" in command]
        assert down == [docker[-1]], docker
        try:
            with health_checks(lambda: project_containers(project)):
                for command in docker[:-1]:
                    stack.run(command)
                yield stack
        finally:
            if stack.leftovers():
                stack.run("docker compose down -v --timeout 1")
            images = [f"{project}_web", f"{project}_migrate"]
            podman("rmi", "--force", *images, check=False)


def test_up_starts_every_service_and_the_proxy_answers(stack: Stack) -> None:
    ps = next(output for command, output in stack.outputs.items() if command.endswith(" ps"))
    for service in ("db", "memcached-1", "memcached-2", "migrate", "web", "proxy"):
        assert f"_{service}_" in ps, ps
    assert re.search(r"_migrate_1\s.*Exit 0", ps), ps
    readyz = next(output for command, output in stack.outputs.items() if "/readyz" in command)
    assert '"database":"ok"' in readyz and '"cache":"ok"' in readyz, readyz
    logs = next(output for command, output in stack.outputs.items() if command.endswith(" web"))
    assert "web_1" in logs and "web_2" in logs, logs


def test_a_write_through_one_replica_is_read_through_the_other(stack: Stack) -> None:
    first, second = (stack.address(name) for name in stack.web_replicas())
    stale = []
    with httpx.Client(timeout=10) as http:
        for round_ in range(20):
            writer, reader = (first, second) if round_ % 2 else (second, first)
            name = f"compose round {round_}"
            http.get(f"http://{reader}:8000/")  # the page cached there before the write
            response = http.post(f"http://{writer}:8000/api/tasks", json={"name": name})
            assert response.status_code == 201, response.text
            page = http.get(f"http://{reader}:8000/")
            listed = http.get(f"http://{reader}:8000/api/tasks").json()["items"]
            if name not in page.text or name not in {task["name"] for task in listed}:
                stale.append(name)
    assert stale == []


def test_the_proxy_spreads_requests_over_the_replicas(stack: Stack) -> None:
    ids = [f"spread-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        for request_id in ids:
            assert http.get("/", headers={"X-Request-ID": request_id}).status_code == 200
    served = {
        name: sum(request_id in podman("logs", name).stdout for request_id in ids)
        for name in stack.web_replicas()
    }
    assert sum(served.values()) == len(ids) and all(served.values()), served


def test_the_stack_keeps_answering_with_a_replica_killed(stack: Stack) -> None:
    victim, survivor = stack.web_replicas()
    podman("kill", victim)
    statuses = []
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        for number in range(30):
            statuses.append(http.get("/").status_code)
            written = http.post("/api/tasks", json={"name": f"with one replica {number}"})
            statuses.append(written.status_code)
        names = {task["name"] for task in http.get("/api/tasks?limit=100").json()["items"]}
    assert statuses == [200, 201] * 30
    assert {f"with one replica {number}" for number in range(30)} <= names
    assert survivor in stack.web_replicas()


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    """The module's last test: the README's `down -v`."""
    command = readme_blocks()[0][-1]
    assert shlex.split(command)[-1] == "-v"
    stack.run(command)
    assert stack.leftovers() == []
