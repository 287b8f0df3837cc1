"""schemathesis against our own /openapi.json with every check, on the app as deployed
(hypercorn with hypercorn.toml, PostgreSQL, memcached): every status is documented, every
schema-valid request is accepted and every invalid one refused, every answer fits its
schema, its content type and its headers, and nothing is a 5xx.

The same run by hand, against any server (docs/RELIABILITY.md):

    .venv/bin/st run --checks all --max-examples 50 --seed 1 URL/openapi.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import LiveServer, served_on_postgres

pytestmark = pytest.mark.postgres

ST = Path(sys.executable).with_name("st")
# A fixed seed and a bounded number of examples per operation: the same cases every run,
# in about ten seconds (with no --max-time, fuzzing and stateful stop at the bound).
COMMAND = [
    str(ST), "run", "--checks", "all", "--max-examples", "50", "--seed", "1",
    "--generation-database", "none", "--request-timeout", "5", "--no-color",
]
RUN_TIMEOUT = 120  # seconds; a run takes about 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served_on_postgres(tmp_path_factory.mktemp("schemathesis") / "app.log") as (server, _):
        yield server


def test_schemathesis_with_every_check_finds_no_failure(
    server: LiveServer, tmp_path: Path
) -> None:
    assert ST.exists(), "schemathesis is missing: run `make test` (pyproject's test extra)"
    with urllib.request.urlopen(f"{server.url}/openapi.json") as response:
        spec = json.load(response)
    operations = sum(len(methods) for methods in spec["paths"].values())

    run = subprocess.run(
        [*COMMAND, f"{server.url}/openapi.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    report = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, report
    assert "No issues found" in report, report
    assert re.search(rf"Tested:\s+{operations}\b", report), report
    assert "Traceback" not in server.log_text(), server.log_text()
