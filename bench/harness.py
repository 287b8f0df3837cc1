"""What the benchmarks share: servers started as subprocesses, the tests' services started
for a run, wrk and its output, probes, percentiles, goals, and the resident size of a
server's workers.

Used by bench/http_benchmark.py (and its bench/http_*.py) and bench/side_by_side.py. Plain
helpers: each benchmark owns its servers' lifetimes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import gzip  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from email.message import Message  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from tests.support.servers import LiveServer, ServerFailed  # noqa: E402

WRK = "/usr/bin/wrk"
THREADS, CONNECTIONS = 2, 32
WARM_TRIES = 10
START_TIMEOUT = 60.0
Record = dict[str, Any]


# --- servers -----------------------------------------------------------------------------


class Server:
    """A server process started from `argv` in `cwd` (the repository root by default); up
    once `ready_path` answers 200. The app's variables are removed from the inherited
    environment first, as LiveServer does, so that only `env` configures it."""

    def __init__(self, name: str, argv: Sequence[str], port: int, env: Mapping[str, str],
                 log: Path, ready_path: str = "/healthz", cwd: Path = ROOT) -> None:
        self.name, self.argv, self.port, self.log = name, list(argv), port, log
        self.ready_path, self.cwd = ready_path, cwd
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(LiveServer.APP_VARIABLES)}
        self.env = {**inherited, **env}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process started (a master, for servers with workers), while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def spawn(self) -> Server:
        """Start the process without waiting for it (see `running`)."""
        with self.log.open("ab") as sink:
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=sink,
                                          stderr=subprocess.STDOUT)
        return self

    def start(self) -> Server:
        self.spawn()
        try:
            self.wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if probe(self.url + self.ready_path, timeout=1).status == 200:
                return
            time.sleep(0.1)
        raise ServerFailed(f"{self.name} did not answer {self.ready_path} within "
                           f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM without waiting (`stop` waits)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        self.terminate()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Start `servers` all at once (their start-ups overlap), wait until each is up, and stop
    them all afterwards (stopping one earlier is allowed)."""
    with ExitStack() as stack:
        stack.callback(stop_all, servers)
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_until_up()
        yield


def stop_all(servers: Sequence[Server]) -> None:
    """Stop `servers` together: SIGTERM to all, then wait for each."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


def started_or_exit[T](stack: ExitStack, start: Callable[[], T],
                       stop: Callable[[T], object]) -> T:
    """`start()` (one of the tests' helpers: a database, a memcached), with `stop` of what
    it made on `stack`; the run ends with the helper's message if it fails or skips, as it
    does when its server is missing."""
    try:
        started = start()
    except (pytest.fail.Exception, pytest.skip.Exception) as error:
        sys.exit(str(error))
    stack.callback(stop, started)
    return started


# --- measuring ---------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    latency_avg_ms: float
    latency_p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]

    def notes(self) -> str:
        bad = [f"{self.non_2xx:,} non-2xx/3xx"] if self.non_2xx else []
        bad += [f"{n:,} {kind} errors" for kind, n in self.socket_errors.items() if n]
        return ", ".join(bad)


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def milliseconds(text: str) -> float:
    """wrk's `23.90ms`, `1.08s`, `512.00us` in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def parse_wrk(out: str) -> WrkResult:
    def find(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"wrk output lacks {pattern!r}:\n{out}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    socket_errors = {kind: int(n) for kind, n in
                     re.findall(r"(\w+) (\d+)", errors.group(1) if errors else "")}
    return WrkResult(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        latency_avg_ms=milliseconds(find(r"Latency\s+(\S+)")),
        latency_p99_ms=milliseconds(find(r"\s99%\s+(\S+)")),
        requests=int(find(r"(\d+) requests in")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def wrk(url: str, seconds: int, headers: Sequence[tuple[str, str]] = (),
        timeout: int | None = None) -> WrkResult:
    """`wrk -t2 -c32 -dSECONDS --latency` on `url`; `timeout` (s) replaces wrk's 2 s, after
    which it drops a request unanswered and counts a timeout error."""
    args = [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    args += [f"--timeout={timeout}s"] if timeout else []
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    done = subprocess.run([*args, url], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


@dataclass
class Probe:
    """One answer as a client without decompression sees it (like wrk)."""

    status: int
    headers: Message
    body: bytes

    def summary(self) -> Record:
        return {"status": self.status,
                "content_encoding": self.headers.get("Content-Encoding") or "identity",
                "body_bytes": len(self.body), "x_cache": self.headers.get("X-Cache")}

    def text(self) -> str:
        raw = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" \
            else self.body
        return raw.decode(errors="replace")


def probe(url: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 30) -> Probe:
    """GET with urllib, which sends no Accept-Encoding unless told and never decodes."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Probe(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:  # 304 and 4xx/5xx come here
        return Probe(error.code, error.headers, error.read())
    except OSError as error:
        return Probe(0, Message(), str(error).encode())


def warm(url: str, headers: Sequence[tuple[str, str]], cache: bool) -> Probe:
    """Request `url` until an answer is a cache hit (cached app) or twice (uncached)."""
    answer = probe(url, headers)
    for _ in range(WARM_TRIES if cache else 1):
        answer = probe(url, headers)
        if cache and answer.headers.get("X-Cache") == "hit":
            break
    return answer


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# --- goals -------------------------------------------------------------------------------


@dataclass
class Goal:
    text: str
    met: bool | None  # None: not measured in this run
    detail: str

    def line(self) -> str:
        verdict = {True: "met", False: "not met", None: "not measured"}[self.met]
        return f"- {self.text}: {self.detail}: **{verdict}**."


# --- processes ---------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc), in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def workers(server: Server) -> list[int]:
    """The worker processes of `server`: the children of its master, multiprocessing's
    helper processes left out; the master itself if it has no children."""
    if server.pid is None:
        return []
    found = []
    for pid in children(server.pid) or [server.pid]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "resource_tracker" not in command and "forkserver" not in command:
            found.append(pid)
    return found


def worker_rss(server: Server) -> list[Record]:
    """Each worker of `server` with its VmRSS in KiB."""
    return [{"pid": pid, "rss_kib": rss} for pid in workers(server)
            if (rss := rss_kib(pid)) is not None]


def cpu_seconds(pids: Sequence[int]) -> float:
    """The CPU time (user and system) the processes `pids` have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")
