"""The base images the Dockerfile and compose.yaml name, for an engine that cannot pull them.

Where Docker Hub answers, podman pulls the official images. The test machines reach only
Debian's archive, PyPI and npm (research/containers.md), so there each image that is
missing is built here instead: a stand-in carrying the official name
(`docker.io/library/python:3.13-slim-bookworm`, ...), made from Debian packages with
mmdebstrap and imported into podman's store, where it stays: `podman image exists` finds it
on the next run, so each is built once per machine (a few seconds to a minute each).

    python -m tests.support.stand_in_images          # every image the project names
    podman images --filter label=tasklist.stand-in   # what was built here

A stand-in does for the project what the official image does, not more (each recipe below
says how it differs). All of them trust the host's extra certificate authorities
(/usr/local/share/ca-certificates): outbound HTTPS here goes through a proxy that re-signs
certificates, which pip and npm inside a build must accept. The project's own files name
the official images and need no change for them.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from app.settings import PROJECT_ROOT
from tests.support.deploy import dockerfile_stages
from tests.support.podman import environment, image_exists, podman, tool

HERE = Path(__file__).parent
HOST_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
LABEL = "tasklist.stand-in"
# Builds on one machine take turns (two test runs at once build each image once).
LOCK = Path(tempfile.gettempdir()) / "tasklist-stand-in-images.lock"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Outcome = Literal["present", "pulled", "built"]


@dataclass(frozen=True)
class StandIn:
    """How to make one image from Debian: the suite, the packages, the commands run in the
    new root (`$1`) or mmdebstrap's hooks (`upload FILE PATH`), and the image's config
    (Dockerfile instructions for `podman import --change`)."""

    suite: str
    packages: tuple[str, ...]
    customize: tuple[str, ...]
    config: tuple[str, ...]
    differs: str  # from the official image, for the reader and `--list`


STAND_INS: dict[str, StandIn] = {
    # Python 3.13 is Debian 13's (trixie) Python; bookworm's is 3.11, too old for Quart 0.23.
    "python:3.13-slim-bookworm": StandIn(
        suite="trixie",
        packages=("python3", "python3-venv", "python-is-python3"),
        customize=(
            'ln -s /usr/bin/python3 "$1/usr/local/bin/python3"',
            'ln -s /usr/bin/python3 "$1/usr/local/bin/python"',
        ),
        config=(f"ENV PATH={DEBIAN_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
        differs="Debian 13's Python 3.13 in /usr/bin (linked from /usr/local/bin), glibc "
        "2.41; the official image builds Python into /usr/local on Debian 12",
    ),
    # The assets stage runs `npm ci` and `npm run build`: Debian 12's Node.js and npm do.
    "node:24-bookworm-slim": StandIn(
        suite="bookworm",
        packages=("nodejs", "npm"),
        customize=('chroot "$1" useradd --uid 1000 --user-group --create-home node',),
        config=(
            f"ENV PATH={DEBIAN_PATH}",
            # Node.js keeps its own list of authorities; npm goes through the host's proxy.
            "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
            'CMD ["node"]',
        ),
        differs="Debian 12's Node.js 18 and npm 9, not Node.js 24 (enough for `npm ci`)",
    ),
    "postgres:17": StandIn(
        suite="trixie",
        packages=("postgresql-17",),
        customize=(
            # The package makes a cluster of its own (17/main); the entrypoint makes PGDATA's.
            'rm -rf "$1/var/lib/postgresql/17" "$1/etc/postgresql/17"',
            f"upload {HERE / 'postgres-entrypoint.sh'} /usr/local/bin/docker-entrypoint.sh",
            'chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"',
            'install -d -m 700 "$1/var/lib/postgresql/data"',
            'chroot "$1" chown postgres:postgres /var/lib/postgresql/data',
        ),
        config=(
            f"ENV PATH=/usr/lib/postgresql/17/bin:{DEBIAN_PATH}",
            "ENV PGDATA=/var/lib/postgresql/data",
            "ENV LANG=C.UTF-8",
            "VOLUME /var/lib/postgresql/data",
            "EXPOSE 5432",
            "STOPSIGNAL SIGINT",
            'ENTRYPOINT ["docker-entrypoint.sh"]',
            'CMD ["postgres"]',
        ),
        differs="Debian 13's PostgreSQL 17; the entrypoint does only POSTGRES_USER, "
        "POSTGRES_PASSWORD and POSTGRES_DB (no /docker-entrypoint-initdb.d)",
    ),
    "memcached:1.6-bookworm": StandIn(
        suite="bookworm",
        packages=("memcached",),
        customize=(),
        config=(f"ENV PATH={DEBIAN_PATH}", "USER memcache", "EXPOSE 11211", 'CMD ["memcached"]'),
        differs="Debian 12's memcached 1.6.18; no entrypoint (give the whole command)",
    ),
    "haproxy:3.0": StandIn(
        suite="trixie",
        packages=("haproxy",),
        customize=(
            'install -d "$1/usr/local/etc/haproxy"',
            f"upload {HERE / 'haproxy-entrypoint.sh'} /usr/local/bin/docker-entrypoint.sh",
            'chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"',
        ),
        config=(
            f"ENV PATH={DEBIAN_PATH}",
            "USER haproxy",
            "STOPSIGNAL SIGUSR1",
            'ENTRYPOINT ["docker-entrypoint.sh"]',
            'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]',
        ),
        differs="Debian 13's HAProxy 3.0 in /usr/sbin; the same config path, user and "
        "entrypoint",
    ),
}


def official(name: str) -> str:
    """`python:3.13` -> `docker.io/library/python:3.13`, the name Docker and podman give an
    official image (and compose's `image:` resolves to through the API)."""
    return name if "/" in name else f"docker.io/library/{name}"


def project_base_images() -> list[str]:
    """The images the project builds on or runs: the Dockerfile's FROM lines (its ARG
    defaults filled in) and compose.yaml's `image:`s, in that order."""
    global_args, stages = dockerfile_stages()
    names: list[str] = []
    stage_names: set[str] = set()
    for stage in stages:
        source, _, alias = stage[0][1].partition(" AS ")
        source = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], source.strip())
        if source not in stage_names and source not in names:
            names.append(source)
        stage_names.add(alias.strip().lower())
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    for service in compose["services"].values():
        image = service.get("image")
        if image and "build" not in service and image not in names:
            names.append(image)
    return names


def ensure(names: list[str] | None = None, *, log: Path | None = None) -> dict[str, Outcome]:
    """Make each image present in podman's store: there already, else pulled, else built
    as a stand-in. Returns what was done for each; fails naming an image without a recipe."""
    names = project_base_images() if names is None else names
    unknown = [name for name in names if name not in STAND_INS]
    assert not unknown, f"no stand-in recipe for {unknown}: add one to {__name__}"
    outcomes: dict[str, Outcome] = {}
    with _machine_lock():
        missing = []
        for name in names:
            if image_exists(official(name)):
                outcomes[name] = "present"
            elif podman("pull", "--quiet", official(name), check=False, timeout=600).returncode:
                missing.append(name)  # no registry: "no such host"
            else:
                outcomes[name] = "pulled"
        # Two at a time: each is mostly dpkg unpacking, and the machine has two cores.
        with ThreadPoolExecutor(2) as builders:
            list(builders.map(lambda name: build(name, log=log), missing))
        outcomes.update(dict.fromkeys(missing, "built"))
    return {name: outcomes[name] for name in names}


def build(name: str, *, log: Path | None = None) -> float:
    """Build the stand-in for `name` and import it under the official name; its seconds."""
    recipe = STAND_INS[name]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stand-in-") as scratch:
        root = Path(scratch) / "root.tar"
        packages = ",".join(("ca-certificates", *recipe.packages))
        hooks = [*_trust_host_authorities(), *recipe.customize]
        command = [
            tool("mmdebstrap"), "--variant=minbase", f"--include={packages}",
            "--aptopt=APT::Install-Recommends false",
            *(f"--customize-hook={hook}" for hook in hooks),
            recipe.suite, str(root), debian_mirror(),
        ]
        _run(command, log)
        changes = [*recipe.config, f"LABEL {LABEL}={name}"]
        podman(
            "import", *(f"--change={change}" for change in changes),
            "--message", f"stand-in for {name}: {recipe.differs}",
            str(root), official(name), timeout=600,
        )
    return time.monotonic() - began


def _trust_host_authorities() -> list[str]:
    if not HOST_CAS:
        return []
    uploads = [f"upload {ca} /usr/local/share/ca-certificates/{ca.name}" for ca in HOST_CAS]
    return [*uploads, 'chroot "$1" update-ca-certificates --fresh > /dev/null']


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (its main suite's, not security's)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        text = source.read_text() if source.is_file() else ""
        uris: list[str] = re.findall(r"^URIs:\s*(\S+)", text, re.M)
        uris += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def _run(command: list[str], log: Path | None) -> None:
    result = subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=900, check=False
    )
    if log is not None:
        with log.open("a") as sink:
            sink.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise AssertionError(f"{command[0]} exited {result.returncode}:\n{result.stderr[-4000:]}")


@contextmanager
def _machine_lock() -> Iterator[None]:
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
