"""The simulated users: each one a session (its own cookie) that writes its own tasks and
reads everyone's, through the JSON API, the HTML forms as a browser without JavaScript
sends them (post/redirect/get) and htmx's requests for fragments, with no pause between
requests (a closed loop: the load is as much as the app answers).

Every answer is checked as it arrives: each read against the ledger (no older data than
what was acknowledged before it was sent), each page's flash messages against what this
session was due to be shown (never another session's), each session cookie against the
cookies given to the other clients, and each cross-site write for its 403.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.ledger import Ledger, State, Tally
from tests.support.servers import CLIENT_LIMITS

TIMEOUT = 30.0  # seconds; above every deadline of the app's (pool and connect: 5 s each)
SESSION_COOKIE = "session"
FAR = 2**63  # an id beyond every task's: the upper end of the first page's range
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}
REFUSED_NAME = "Task name is required."
TASK_DELETED = "Task deleted."

ROW = re.compile(
    r'<li id="task-(\d+)" class="task( done)?">.*?<input id="task-\d+-name" name="name" '
    r'value="([^"]*)"',
    re.S,
)
LOAD_MORE = '<li id="load-more"'
FLASH_AREA = re.compile(r'<div id="flashes"[^>]*>(.*?)</div>', re.S)
FLASH_OOB = re.compile(r'<hx-partial hx-target="#flashes"[^>]*>(.*?)</hx-partial>', re.S)
FLASH = re.compile(r'<p class="flash flash-\w+">(.*?)</p>', re.S)
OWNER = re.compile(r" c(\d+) #")  # which client a task name (and so a flash) belongs to


@dataclass(frozen=True)
class Request:
    """One request as the client saw it."""

    label: str  # method, route and flavour: "POST / (form)"
    outcome: str  # the status code, or the name of the transport error
    sent: float
    done: float

    @property
    def status(self) -> int | None:
        return int(self.outcome) if self.outcome.isdigit() else None

    @property
    def seconds(self) -> float:
        return self.done - self.sent


@dataclass
class Recorder:
    """What one phase's requests did and what their checks found."""

    began: float = field(default_factory=time.monotonic)
    requests: list[Request] = field(default_factory=list)
    violations: Tally = field(default_factory=Tally)
    dropped: Tally = field(default_factory=Tally)  # requests that got no answer
    windows: list[tuple[float, float]] = field(default_factory=list)  # database down
    flashes: Counter[str] = field(default_factory=Counter)  # shown, lost
    cross_site: Counter[str] = field(default_factory=Counter)  # sent, refused, unanswered
    # Reads may lag an acknowledged write by this much (a phase with a partial partition:
    # the invalidation log's delivery bound); those that do are counted, not violations.
    grace: float = 0.0
    late: list[float] = field(default_factory=list)  # how far behind each late read was


@dataclass(frozen=True)
class Reply:
    label: str
    status: int | None  # None: no answer (a dropped connection, a timeout)
    headers: httpx.Headers
    text: str
    sent: float
    done: float

    @property
    def uncertain(self) -> bool:
        """No definite answer: a write may or may not have been applied."""
        return self.status is None or self.status >= 500

    @property
    def outcome(self) -> str:
        """The request and its answer, as the ledger notes them."""
        return f"{self.label} {self.status or self.text}"

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Page:
    """The rows of a list page or fragment, and the id range it covers: every task with an
    id in [low, high) is on it, or does not exist."""

    rows: dict[int, tuple[str, bool]]
    low: int
    high: int


def parse_rows(text: str) -> dict[int, tuple[str, bool]]:
    return {
        int(task_id): (html.unescape(name), bool(done))
        for task_id, done, name in ROW.findall(text)
    }


def parse_page(text: str, before: int | None) -> Page:
    rows = parse_rows(text)
    low = min(rows) if rows and LOAD_MORE in text else 0
    return Page(rows, low, before or FAR)


def flashes_in(area: str) -> list[str]:
    return [html.unescape(message) for message in FLASH.findall(area)]


class World:
    """What the clients share: the ledger, the session cookies given out so far (value ->
    client), the current phase's recorder, and the app's address."""

    def __init__(self, base_url: str, run_id: str) -> None:
        self.base_url = base_url
        self.run_id = run_id
        self.ledger = Ledger()
        self.sessions: dict[str, int] = {}
        self.recorder = Recorder()


class Client:
    def __init__(self, number: int, world: World, rng: random.Random) -> None:
        self.number = number
        self.world = world
        self.rng = rng
        self.http = httpx.AsyncClient(
            base_url=world.base_url, timeout=TIMEOUT, follow_redirects=False,
            limits=CLIENT_LIMITS,  # idle connections dropped before hypercorn's keep-alive
        )
        self.same_origin = {"Origin": world.base_url, "Sec-Fetch-Site": "same-origin"}
        self.cookie: str | None = None  # managed by hand: production marks it Secure
        self.own: dict[int, tuple[str, bool]] = {}  # tasks it writes: last acknowledged
        self.due_flashes: list[str] = []  # flashed for this session, not yet shown
        self.shown_flashes: set[str] = set()
        self.etags: dict[int, tuple[str, State]] = {}
        self.sequence = 0

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def recorder(self) -> Recorder:
        return self.world.recorder

    @property
    def ledger(self) -> Ledger:
        return self.world.ledger

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.step()

    async def step(self) -> None:
        """One user action: a write to one of its tasks (then a read of it), or a read."""
        roll = self.rng.random()
        flavour = self.rng.choice(("api", "form", "htmx"))
        if len(self.own) < 2 or (roll < 0.12 and len(self.own) < 6):
            await self.create(flavour)
        elif roll < 0.22:
            await self.rename(flavour, self.pick_own())
        elif roll < 0.30:
            await self.toggle(flavour, self.pick_own())
        elif roll < 0.36:
            await self.delete(flavour, self.pick_own())
        elif roll < 0.38:
            await self.blank(flavour)
        elif roll < 0.40:
            await self.cross_site()
        else:
            await self.read()

    def pick_own(self) -> int:
        return self.rng.choice(list(self.own))

    def new_name(self) -> str:
        """Unique by construction; some with a non-ASCII letter, for the forms' UTF-8."""
        self.sequence += 1
        accent = " café" if self.sequence % 3 == 0 else ""
        return f"{self.world.run_id} c{self.number:02d} #{self.sequence}{accent}"

    # --- transport -------------------------------------------------------------------------

    async def send(
        self, method: str, path: str, label: str, headers: dict[str, str] | None = None,
        **body: Any,
    ) -> Reply:
        """Send one request with this session's cookie, and record it."""
        headers = dict(headers or {})
        if self.cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        sent = time.monotonic()
        try:
            response = await self.http.request(method, path, headers=headers, **body)
        except httpx.TransportError as error:
            done = time.monotonic()
            self.recorder.requests.append(Request(label, type(error).__name__, sent, done))
            self.recorder.dropped.add(type(error).__name__, f"client {self.number} {label} "
                                      f"sent at +{sent - self.recorder.began:.2f} s: {error}")
            return Reply(label, None, httpx.Headers(), type(error).__name__, sent, done)
        done = time.monotonic()
        self.recorder.requests.append(Request(label, str(response.status_code), sent, done))
        self.take_cookie(response.headers)
        return Reply(label, response.status_code, response.headers, response.text, sent, done)

    def take_cookie(self, headers: httpx.Headers) -> None:
        for header in headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name.strip() != SESSION_COOKIE:
                continue
            value = rest.split(";", 1)[0].strip()
            if not value:
                self.cookie = None
                continue
            owner = self.world.sessions.setdefault(value, self.number)
            if owner != self.number:
                self.recorder.violations.add(
                    "another session's cookie",
                    f"client {self.number} was given client {owner}'s session cookie",
                )
            self.cookie = value

    def unexpected(self, reply: Reply, what: str) -> None:
        self.recorder.violations.add(
            "unexpected status", f"client {self.number} {what}: {reply.status} {reply.text[:200]!r}"
        )

    # --- writes ---------------------------------------------------------------------------

    def form_headers(self, flavour: str) -> dict[str, str]:
        """What a browser sends with a form from this site (and htmx, its own headers)."""
        return self.same_origin | (HTMX if flavour == "htmx" else {})

    async def create(self, flavour: str) -> None:
        """A new task. Its id comes with the answer (the API's body, htmx's row) or, for a
        form, from the page the browser loads after the 303."""
        name = self.new_name()
        if flavour == "api":
            reply = await self.send("POST", "/api/tasks", "POST /api/tasks", json={"name": name})
            expected = 201
        else:
            reply = await self.send("POST", "/", f"POST / ({flavour})",
                                    self.form_headers(flavour), data={"name": name})
            expected = 200 if flavour == "htmx" else 303
        if reply.uncertain:
            self.ledger.create_unbound(self.number, name, acknowledged=False,
                                       answer=reply.outcome)
        elif reply.status != expected:
            self.unexpected(reply, f"creating {name!r}")
        elif flavour == "form":
            self.due_flashes.append(f"Added “{name}”.")
            await self.follow_created(name, reply)
        elif (task_id := self.created(name, reply, flavour)) is not None:
            await self.verify(task_id)

    def created(self, name: str, reply: Reply, flavour: str) -> int | None:
        """Enter the task an API or htmx create answered with; its id, if it has one."""
        if flavour == "api":
            body = reply.json()
            task_id: int | None = body["id"]
            stored: str | None = body["name"]
        else:
            self.check_htmx_flashes(reply, [f"Added “{name}”."])
            rows = parse_rows(reply.text)
            task_id = next(iter(rows), None)
            stored = rows[task_id][0] if task_id is not None else None
        if task_id is None or stored != name:
            self.recorder.violations.add(
                "answer differs from the write", f"created {name!r}, answered {stored!r}"
            )
            self.ledger.create_unbound(self.number, name, acknowledged=True,
                                       answer=reply.outcome)
            return None
        self.ledger.created(task_id, self.number, name, reply.sent, reply.done)
        self.own[task_id] = (name, False)
        return task_id

    async def follow_created(self, name: str, created: Reply) -> None:
        """The GET a browser sends after a form's 303: it learns the new task's id there,
        and the page must show the task, since it was committed before the 303."""
        reply, page = await self.get_page(htmx=False, before=None, observe=False)
        task_id = None
        if page is not None:
            task_id = next((i for i, (n, _) in page.rows.items() if n == name), None)
        if task_id is None:
            self.ledger.create_unbound(self.number, name, acknowledged=True,
                                       answer=created.outcome)
            newer_than = self.ledger.newest_id_before(created.sent)
            if page is not None and page.low <= newer_than + 1:
                self.recorder.violations.add(
                    "stale read", f"client {self.number}: the page after the 303 for {name!r} "
                    f"lacks it (X-Cache {reply.headers.get('x-cache')})"
                )
        else:
            self.ledger.created(task_id, self.number, name, created.sent, created.done)
            self.own[task_id] = (name, False)
        if page is not None:
            self.observe_page(reply, page, "GET / after a 303")

    async def rename(self, flavour: str, task_id: int) -> None:
        name = self.new_name()
        done = self.own[task_id][1]
        await self.write(flavour, task_id, (name, done), "rename", {"name": name},
                         f"Renamed to “{name}”.")

    async def toggle(self, flavour: str, task_id: int) -> None:
        name, done = self.own[task_id]
        value = "1" if not done else "0"
        await self.write(flavour, task_id, (name, not done), "complete", {"done": value}, None)

    async def delete(self, flavour: str, task_id: int) -> None:
        await self.write(flavour, task_id, None, "delete", {}, TASK_DELETED)

    async def write(
        self, flavour: str, task_id: int, state: State, action: str, form: dict[str, str],
        message: str | None,
    ) -> None:
        """One change to an own task, then a read of it. The new state is in the ledger from
        before the request is sent; then it is acknowledged, withdrawn (refused), or left
        uncertain, and then the task is written no more."""
        version = self.ledger.writing(task_id, state, time.monotonic())
        reply, expected = await self.send_write(flavour, task_id, state, action, form)
        if reply.uncertain or reply.status != expected:
            self.own.pop(task_id)
            version.answer = reply.outcome
            if not reply.uncertain:
                self.ledger.withdraw(task_id, version)
                self.unexpected(reply, f"{action} of its task {task_id}")
            return
        version.acked = reply.done
        if state is None:
            self.own.pop(task_id)
        else:
            self.own[task_id] = state
        if flavour == "form":
            if message:
                self.due_flashes.append(message)
            await self.get_page(htmx=False, before=None)
            return
        if flavour == "htmx":
            self.check_htmx_flashes(reply, [message] if message else [])
        answered = self.answered_state(reply, flavour, task_id)
        if state is not None and answered != state:
            self.recorder.violations.add(
                "answer differs from the write",
                f"task {task_id}: wrote {state!r}, answered {answered!r}",
            )
        await self.verify(task_id)

    async def send_write(
        self, flavour: str, task_id: int, state: State, action: str, form: dict[str, str]
    ) -> tuple[Reply, int]:
        """The request of one change, and the status that acknowledges it."""
        if flavour != "api":
            reply = await self.send("POST", f"/{task_id}/{action}",
                                    f"POST /<id>/{action} ({flavour})",
                                    self.form_headers(flavour), data=form)
            return reply, 200 if flavour == "htmx" else 303
        path = f"/api/tasks/{task_id}"
        if state is None:
            return await self.send("DELETE", path, "DELETE /api/tasks/<id>"), 204
        change = {"name": state[0]} if action == "rename" else {"done": state[1]}
        return await self.send("PATCH", path, "PATCH /api/tasks/<id>", json=change), 200

    def answered_state(self, reply: Reply, flavour: str, task_id: int) -> State:
        """The task as the answer to a change shows it: the API's body, htmx's row."""
        if flavour == "api":
            return None if reply.status == 204 else self.answered(reply.json())
        return parse_rows(reply.text).get(task_id)

    @staticmethod
    def answered(body: dict[str, Any]) -> State:
        return body["name"], body["done"]

    async def blank(self, flavour: str) -> None:
        """A blank name: refused with "Task name is required.", for this session only."""
        if flavour == "htmx":
            reply = await self.send(
                "POST", "/", "POST / blank (htmx)", self.form_headers(flavour),
                data={"name": "  "},
            )
            if not reply.uncertain:
                if reply.status != 422 or REFUSED_NAME not in reply.text:
                    self.unexpected(reply, "posting a blank name with htmx")
                self.check_htmx_flashes(reply, [])
            return
        reply = await self.send(
            "POST", "/", "POST / blank (form)", self.form_headers(flavour), data={"name": "  "}
        )
        if reply.status == 303:
            self.due_flashes.append(REFUSED_NAME)
            await self.get_page(htmx=False, before=None)
        elif not reply.uncertain:
            self.unexpected(reply, "posting a blank name")

    async def cross_site(self) -> None:
        """A write another site's page makes the browser send: refused, nothing changed."""
        name = f"{self.new_name()} cross-site"
        self.ledger.refused_names.add(name)
        task_id = self.pick_own() if self.own else None
        evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        choices: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
            ("POST", "/", evil, {"data": {"name": name}}),
        ]
        if task_id is not None:
            choices += [
                # Without Sec-Fetch-Site (an older browser): the Origin decides.
                ("POST", f"/{task_id}/delete", {"Origin": "https://evil.example"}, {}),
                ("POST", f"/{task_id}/rename", evil, {"data": {"name": name}}),
                ("PATCH", f"/api/tasks/{task_id}", {"Sec-Fetch-Site": "same-site"},
                 {"json": {"name": name}}),
            ]
        method, path, headers, body = self.rng.choice(choices)
        label = f"{method} {re.sub(r'/\d+', '/<id>', path)} (cross-site)"
        reply = await self.send(method, path, label, headers, **body)
        self.recorder.cross_site["sent"] += 1
        if reply.status == 403:
            self.recorder.cross_site["refused"] += 1
        elif reply.status is None:  # in flight on a killed worker: no answer either way
            self.recorder.cross_site["unanswered"] += 1
        else:
            self.recorder.violations.add(
                "cross-site write not refused", f"{label}: {reply.status}"
            )
        if task_id is not None:
            await self.verify(task_id)

    # --- reads ----------------------------------------------------------------------------

    async def read(self) -> None:
        """A read of the list (page, fragment, older pages, the API's) or of one task (its
        own, a hot one, or anyone's)."""
        roll = self.rng.random()
        if roll < 0.25:
            await self.get_page(htmx=False, before=None)
        elif roll < 0.45:
            await self.get_page(htmx=True, before=None)
        elif roll < 0.55:
            newest = self.ledger.newest_id_before(math.inf) or 2
            await self.get_page(htmx=self.rng.random() < 0.5,
                                 before=self.rng.randint(2, newest))
        elif roll < 0.62 and self.own:
            await self.read_task(self.pick_own())
        elif roll < 0.80 and self.ledger.hot:
            await self.read_task(self.rng.choice(self.ledger.hot))
        elif roll < 0.85 and self.ledger.tasks:
            await self.read_task(self.rng.choice(list(self.ledger.tasks)))
        else:
            await self.read_list()

    async def verify(self, task_id: int) -> None:
        """A read right after an own write: the write must show."""
        roll = self.rng.random()
        if roll < 0.4:
            await self.read_task(task_id)
        else:
            await self.get_page(htmx=roll < 0.7, before=None)

    async def get_page(
        self, *, htmx: bool, before: int | None, observe: bool = True
    ) -> tuple[Reply, Page | None]:
        path = "/" if before is None else f"/?before={before}"
        label = f"GET {'/' if before is None else '/?before'} ({'htmx' if htmx else 'page'})"
        reply = await self.send("GET", path, label, HTMX if htmx else None)
        if not htmx:
            self.check_page_flashes(reply, label)
        if reply.status != 200:
            if not reply.uncertain:
                self.unexpected(reply, label)
            return reply, None
        page = parse_page(reply.text, before)
        if observe:
            self.observe_page(reply, page, label)
        return reply, page

    def observe_page(self, reply: Reply, page: Page, label: str) -> None:
        """Each known task in the page's range: its row, or its absence."""
        for task_id in self.ledger.ids_between(page.low, page.high):
            self.observe(task_id, page.rows.get(task_id), reply, label)

    async def read_task(self, task_id: int) -> None:
        """One task, half the time revalidating what this client last saw of it: a 304 says
        that is still the task, so it is checked as a read of its own."""
        remembered = self.etags.get(task_id) if self.rng.random() < 0.5 else None
        headers = {"If-None-Match": remembered[0]} if remembered else None
        reply = await self.send("GET", f"/api/tasks/{task_id}", "GET /api/tasks/<id>", headers)
        if reply.uncertain:
            return
        if reply.status == 304 and remembered:
            state = remembered[1]
        elif reply.status == 200:
            state = self.answered(reply.json())
            if etag := reply.headers.get("etag"):
                self.etags[task_id] = (etag, state)
        elif reply.status == 404:
            state = None
        else:
            self.unexpected(reply, f"GET /api/tasks/{task_id}")
            return
        self.observe(task_id, state, reply, "GET /api/tasks/<id>")

    async def read_list(self) -> None:
        """A page of the API's list (in id order): a contiguous run of the table."""
        offset = self.rng.randint(0, max(0, len(self.ledger.tasks) - 50))
        reply = await self.send(
            "GET", f"/api/tasks?limit=50&offset={offset}", "GET /api/tasks?offset"
        )
        if reply.status != 200:
            if not reply.uncertain:
                self.unexpected(reply, "GET /api/tasks")
            return
        items = {item["id"]: (item["name"], item["done"]) for item in reply.json()["items"]}
        if items:
            page = Page(items, min(items), max(items) + 1)
            self.observe_page(reply, page, "GET /api/tasks?offset")

    def observe(self, task_id: int, state: State, reply: Reply, label: str) -> None:
        recorder = self.recorder
        found = self.ledger.check_read(task_id, state, reply.sent, reply.done, recorder.grace)
        if found is not None:
            kind, detail = found
            if kind == "late":
                recorder.late.append(self.ledger.lag(task_id, reply.sent))
                return
            recorder.violations.add(
                f"{kind} read", f"client {self.number} {label} (X-Cache "
                f"{reply.headers.get('x-cache')}): {detail}"
            )

    # --- flashes --------------------------------------------------------------------------

    def check_page_flashes(self, reply: Reply, label: str) -> None:
        """A whole page shows this session's due flashes (or, if its session was lost with
        a memcached server, none), and never any other."""
        area = FLASH_AREA.search(reply.text)
        if area is None:
            return
        for message in flashes_in(area.group(1)):
            if message in self.due_flashes:
                self.due_flashes.remove(message)
                self.shown_flashes.add(message)
                self.recorder.flashes["shown"] += 1
            else:
                self.foreign_flash(message, label)
        self.recorder.flashes["lost"] += len(self.due_flashes)
        self.due_flashes.clear()

    def check_htmx_flashes(self, reply: Reply, expected: list[str]) -> None:
        """An htmx answer carries its own action's message out of band, nothing else."""
        shown = [m for area in FLASH_OOB.findall(reply.text) for m in flashes_in(area)]
        for message in shown:
            if message not in expected:
                self.foreign_flash(message, "an htmx answer")
        if missing := [m for m in expected if m not in shown]:
            self.recorder.violations.add(
                "answer differs from the write", f"an htmx answer lacks its message {missing}"
            )

    def foreign_flash(self, message: str, where: str) -> None:
        owner = OWNER.search(message)
        if owner is not None and int(owner.group(1)) != self.number:
            kind = "another session's flash"
        elif message in self.shown_flashes:
            kind = "flash shown twice"
        else:
            kind = "unexpected flash"
        self.recorder.violations.add(kind, f"client {self.number} on {where}: {message!r}")


async def watch_readiness(
    world: World, deadline: float, every: float = 0.25
) -> None:
    """/readyz as a platform's health check polls it, beside the clients."""
    async with httpx.AsyncClient(base_url=world.base_url, timeout=TIMEOUT,
                                 limits=CLIENT_LIMITS) as http:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                outcome = str((await http.get("/readyz")).status_code)
            except httpx.TransportError as error:
                outcome = type(error).__name__
            world.recorder.requests.append(
                Request("GET /readyz", outcome, sent, time.monotonic())
            )
            await sleep_until(min(deadline, sent + every))


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))
