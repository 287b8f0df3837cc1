"""The HTTP benchmark's report: its tables, diagnostics, chart and files.

`save(records, slots, meta, out, write_doc)` turns a run's records (bench/http_load.py) into
the report: the Markdown text (returned), `out`/http.json (meta, the Q and H runs, the
slots, the diagnostics and every record), `out`/http.png (req/s and in Q against tasks) and,
if `write_doc`, this benchmark's block of docs/PERFORMANCE.md (bench/report.py). The
diagnostics are computed from the run; they are not goals (those are bench/side_by_side.py's).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import CONNECTIONS, THREADS, Goal, Record
from bench.http_load import CASES, DEFAULTS, FLOOR_CASE, Q_CASE, WRITERS, per_round
from bench.http_servers import PACKAGES
from bench.report import write_results

SCRIPT = "bench/http_benchmark.py"
HEADING = "## Task list over HTTP"


def save(records: list[Record], slots: list[Record], meta: Record, out: Path,
         write_doc: bool) -> str:
    """The report's text; http.json and http.png written into `out`, and the text into
    docs/PERFORMANCE.md if `write_doc`."""
    res = Results(records, slots)
    text = render(res, meta)
    out.mkdir(parents=True, exist_ok=True)
    document = {**meta,
                "q": {"app": Q_CASE, "median": res.q, "runs": res.q_runs,
                      "seconds": meta["q_seconds"]},
                "floor": {"app": FLOOR_CASE, "median": res.floor, "runs": res.floor_runs,
                          "in_q": res.floor_in_q},
                "slots": slots, "diagnostics": [asdict(g) for g in diagnostics(res)],
                "cases": records}
    (out / "http.json").write_text(json.dumps(document, indent=1) + "\n")
    chart(res, out / "http.png")
    if write_doc:
        write_results(SCRIPT, HEADING, text)
    return text


class Results:
    """Look-ups over the records and slots of one run."""

    def __init__(self, records: list[Record], slots: list[Record]) -> None:
        self.records, self.slots = records, slots
        self.q_runs = [s["q"] for s in slots]
        self.q = statistics.median(self.q_runs) if self.q_runs else math.nan
        self.floor_runs = [s["floor"] for s in slots if s["floor"] is not None]
        self.floor = statistics.median(self.floor_runs) if self.floor_runs else math.nan
        self.floor_in_q = statistics.median(s["floor"] / s["q"] for s in slots
                                            if s["floor"] is not None) \
            if self.floor_runs else math.nan

    def find(self, **match: Any) -> Record | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in match.items()) and "skipped" not in r:
                return r
        return None

    def page(self, tasks: int, cache: str, case: str = "GET /") -> Record | None:
        return self.find(group="page", server="hypercorn", cache=cache, tasks=tasks, case=case)


def diagnostics(res: Results) -> list[Goal]:
    """The checks of the Q-based figures: no longer goals (those are bench/side_by_side.py's,
    against the tutorial), kept as diagnostics."""
    return [*cached_page_goals(res), *uncached_page_goals(res), *write_read_goals(res),
            *not_modified_goals(res), p99_goal(res)]


def at_least(text: str, record: Record | None, ratio: float) -> Goal:
    if record is None:
        return Goal(text, None, "not in this run")
    return Goal(text, record["in_q"] >= ratio,
                f"{record['rps']:,.0f} req/s, {record['in_q']:.2f} Q")


def cached_page_goals(res: Results) -> list[Goal]:
    found = [at_least(f"cached `GET /`, {n} tasks, >= 2.0 Q", res.page(n, "on"), 2.0)
             for n in (10, 100)]
    for n in (1000, 10000):
        found.append(at_least(f"cached `GET /`, {n} tasks (first page), >= 2.0 Q",
                              res.page(n, "on"), 2.0))
        gz = res.page(n, "on", "GET / gzip")
        goal = at_least(f"cached `GET /` with gzip accepted, {n} tasks, >= 2.0 Q", gz, 2.0)
        if gz is not None:
            goal.detail += f" (served {gz['content_encoding']}, {gz['body_bytes']:,} B)"
        found.append(goal)
    return found


def uncached_page_goals(res: Results) -> list[Goal]:
    found = [at_least("uncached `GET /`, 10 tasks, >= 0.75 Q", res.page(10, "off"), 0.75),
             at_least("uncached `GET /`, 100 tasks, >= 0.19 Q", res.page(100, "off"), 0.19)]
    hundred = res.page(100, "off")
    for n in (1000, 10000):
        text = f"uncached `GET /`, {n} tasks, within 10% of 100 tasks (>= 90% of its rate in Q)"
        record = res.page(n, "off")
        if record is None or hundred is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        share = record["in_q"] / hundred["in_q"]
        found.append(Goal(text, share >= 0.9, f"{record['in_q']:.2f} Q against "
                          f"{hundred['in_q']:.2f} Q ({share:.0%})"))
    return found


def write_read_goals(res: Results) -> list[Goal]:
    found = []
    for n, ratio in ((10, 0.19), (100, 0.09)):
        text = f"write then read, {WRITERS} writers, {n} tasks, >= {ratio} Q pairs/s"
        record = _write_read(res, n, invalidation_log=True)
        if record is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        found.append(Goal(text, record["in_q"] >= ratio,
                          f"{record['pairs_per_s']:,.0f} pairs/s, {record['in_q']:.2f} Q"))
        text = f"write then read, {n} tasks, with the invalidation log >= 0.85x without it"
        without = _write_read(res, n, invalidation_log=False)
        if without is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        share = record["in_q"] / without["in_q"]
        found.append(Goal(text, share >= 0.85, f"{record['in_q']:.3f} Q against "
                          f"{without['in_q']:.3f} Q ({share:.2f}x)"))
    loops = [r for r in res.records if r["group"] == "write-read"]
    stale = sum(r["stale"] for r in loops)
    pairs = sum(r["pairs"] for r in loops)
    found.append(Goal("write then read: zero stale reads", (stale == 0) if loops else None,
                      f"{stale} stale of {pairs:,} reads"))
    return found


def _write_read(res: Results, tasks: int, *, invalidation_log: bool) -> Record | None:
    """The PostgreSQL write-then-read loop at `tasks`, with the invalidation log or without."""
    return res.find(group="write-read", database="postgres", tasks=tasks,
                    invalidation_log=invalidation_log)


def not_modified_goals(res: Results) -> list[Goal]:
    found = []
    for r in res.records:
        if r["group"] != "304":
            continue
        text = f"`GET /` 304 at least as fast as the cached 200, {r['tasks']} tasks"
        if "skipped" in r:
            found.append(Goal(text, None, r["skipped"]))
            continue
        ok = r["compared_200"]["rps"]
        found.append(Goal(text, r["rps"] >= ok, f"{r['rps']:,.0f} against {ok:,.0f} req/s "
                          f"(best of {r['rounds']} each)"))
    return found


def p99_goal(res: Results) -> Goal:
    sizes = sorted({r["tasks"] for r in res.records if r["group"] == "page"})
    p99 = {n: r["latency_p99_ms"] for n in sizes if (r := res.page(n, "on")) is not None}
    detail = ", ".join(f"{n} tasks {p99[n]:,.1f} ms" if n in p99 else f"{n} tasks missing"
                       for n in sizes)
    return Goal("p99 of cached `GET /` recorded for each size",
                (set(p99) == set(sizes)) if sizes else None, detail or "no sizes")


GROUP_TITLES = {
    "page": "`GET /` (the full page)",
    "api": "`GET /api/tasks`",
    "fragment": "`GET /` as an htmx fragment (`HX-Request: true`, `HX-Request-Type: partial`)",
    "next": "The next page (the first page's `rel=\"next\"` link)",
}


def served(r: Record) -> str:
    return f"{r['status']} {r['content_encoding']}, {r['body_bytes']:,} B"


def in_floor(r: Record) -> str:
    return f"{r['in_floor']:.2f} H" if "in_floor" in r else "–"


def rate_cells(r: Record, floor: bool = True) -> str:
    """req/s | in Q | rounds | (in H |) avg | p99 | notes (or the reason it was skipped)."""
    if "skipped" in r:
        return f"– | – | – | {'– | ' if floor else ''}– | – | {r['skipped']}"
    h = f"{in_floor(r)} | " if floor else ""
    return (f"{r['rps']:,.0f} | {r['in_q']:.2f} Q | {per_round(r)} | {h}"
            f"{r['latency_avg_ms']:,.1f} ms | {r['latency_p99_ms']:,.1f} ms | "
            f"{r.get('notes', '')}")


RATE_HEADER = "req/s | in Q | rounds, in Q | in H | avg | p99 | notes |"
RATE_ALIGN = "---:|---:|---|---:|---:|---:|---|"


def case_table(res: Results, group: str) -> list[str]:
    lines = [f"#### {GROUP_TITLES[group]}", "",
             "| tasks | cache | request | path | served (status, encoding, bytes) | X-Cache | "
             + RATE_HEADER, "|---:|---|---|---|---|---|" + RATE_ALIGN]
    for r in res.records:
        if r["group"] == group and r["server"] == "hypercorn":
            path, shown = ("–", "–") if "skipped" in r else (f"`{r['path']}`", served(r))
            lines.append(f"| {r['tasks']} | {r['cache']} | {r['case']} | {path} | {shown} | "
                         f"{r.get('x_cache') or '–'} | {rate_cells(r)} |")
    return [*lines, ""]


def not_modified_table(res: Results) -> list[str]:
    lines = ["#### `GET /` revalidated (`If-None-Match`: 304) against its cached 200", "",
             "| tasks | 304 best req/s | in Q | in H | p99 | cached 200 best req/s | in Q "
             "| in H | p99 | 304 / 200 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res.records:
        if r["group"] != "304":
            continue
        if "skipped" in r:
            lines.append(f"| {r['tasks']} | {r['skipped']} | | | | | | | | |")
            continue
        ok = r["compared_200"]
        lines.append(f"| {r['tasks']} | {r['rps']:,.0f} | {r['in_q']:.2f} Q | {in_floor(r)} | "
                     f"{r['latency_p99_ms']:,.1f} ms | {ok['rps']:,.0f} | {ok['in_q']:.2f} Q | "
                     f"{in_floor(ok)} | {ok['latency_p99_ms']:,.1f} ms | "
                     f"{r['rps'] / ok['rps']:.2f} |")
    return [*lines, ""]


def spread(runs: Sequence[float], median: float) -> str:
    if not runs:
        return "none"
    return (f"{min(runs):,.0f} to {max(runs):,.0f} req/s "
            f"(spread {(max(runs) - min(runs)) / median:.0%} of the median)")


def baseline_table(res: Results, meta: Record) -> list[str]:
    lines = ["#### Baselines (bench/baselines.py, a 5,120-byte `text/html` page)", "",
             "Each once, between two Q runs:", "",
             "| app | worker class | when | req/s | in Q | rounds, in Q | avg | p99 | notes |",
             "|---|---|---|---:|---:|---|---:|---:|---|"]
    for r in res.records:
        if r["group"] == "baseline":
            lines.append(f"| `{r['app']}` | {r['loop']} | {r['when']} | "
                         f"{rate_cells(r, floor=False)} |")
    every = meta["pair_every"]
    where = ("between every two rounds" if every == 1
             else f"once every {every} rounds (a smoke run)")
    return [*lines, "",
            f"Q runs: {len(res.q_runs)} runs of `quart_app` (asyncio), "
            f"`wrk -d{meta['q_seconds']}s` each, {where}: {spread(res.q_runs, res.q)}, "
            f"median **Q = {res.q:,.0f} req/s**. That is how far the machine drifted during "
            "the run, so this median is only the scale of the chart's left panel; every "
            "\"in Q\" is paired with the Q runs next to it.",
            "",
            f"H runs: {len(res.floor_runs)} runs of `hit_floor_app` (uvloop) in the same slots, "
            f"beside each cached measurement: {spread(res.floor_runs, res.floor)}, median "
            f"H = {res.floor:,.0f} req/s; H / Q within a slot: median {res.floor_in_q:.2f}.",
            ""]


def write_read_table(res: Results) -> list[str]:
    lines = ["#### Write then read across two processes", "",
             f"{WRITERS} concurrent writers, each: `POST /api/tasks` through one app process "
             "(one worker), then as soon as the 201 arrives `GET /` through the other; the "
             "read is stale if the page lacks the new task. Each round starts from a table "
             "re-seeded with the tasks at start; pairs/s is the median over rounds.", "",
             "| database | tasks at start | invalidation log | pairs | pairs/s | in Q "
             "| rounds, in Q | avg pair | p99 pair | stale | errors | X-Cache of the reads |",
             "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in res.records:
        if r["group"] == "write-read":
            seen = ", ".join(f"{k} {v:,}" for k, v in sorted(r["x_cache"].items()))
            log = "on" if r.get("invalidation_log", True) else "off"
            database = DATABASES[r.get("database", "postgres")]
            lines.append(f"| {database} | {r['tasks']} | {log} | {r['pairs']:,} | "
                         f"{r['pairs_per_s']:,.0f} | "
                         f"{r['in_q']:.2f} Q | {per_round(r)} | {r['pair_avg_ms']:,.1f} ms | "
                         f"{r['pair_p99_ms']:,.1f} ms | {r['stale']} | {r['errors']} | "
                         f"{seen} |")
    examples = [e for r in res.records if r["group"] == "write-read"
                for e in r["stale_examples"] + r["error_examples"]]
    return [*lines, *[f"- {e}" for e in examples[:10]], ""]


DATABASES = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}


def mysql_table(res: Results) -> list[str]:
    """`GET /` on MariaDB beside PostgreSQL's (where the run measured that size there too),
    and the write-then-read loop on each."""
    lines = ["#### The MySQL column: `GET /` on MariaDB and on PostgreSQL", "",
             "The same servers and measurement, the app's `DATABASE_URL` on a fresh MariaDB "
             "database (asyncmy) instead of PostgreSQL (asyncpg).", "",
             "| tasks | cache | PostgreSQL req/s | PostgreSQL in Q | MariaDB req/s "
             "| MariaDB in Q | MariaDB rounds, in Q | MariaDB X-Cache |",
             "|---:|---|---:|---:|---:|---:|---|---|"]
    for r in res.records:
        if r["group"] != "mysql" or "skipped" in r:
            continue
        pg = res.page(r["tasks"], r["cache"])
        pg_cells = (f"{pg['rps']:,.0f} | {pg['in_q']:.2f} Q" if pg and "skipped" not in pg
                    else "not measured | -")
        lines.append(f"| {r['tasks']} | {r['cache']} | {pg_cells} | {r['rps']:,.0f} | "
                     f"{r['in_q']:.2f} Q | {per_round(r)} | {r.get('x_cache') or '–'} |")
    loops = {(r.get("database", "postgres"), r["tasks"]): r for r in res.records
             if r["group"] == "write-read" and r.get("invalidation_log", True)}
    lines += ["", "| write then read, tasks at start | PostgreSQL pairs/s | in Q "
              "| MariaDB pairs/s | in Q | MariaDB stale |", "|---:|---:|---:|---:|---:|---:|"]
    for (database, tasks), r in sorted(loops.items()):
        pg = loops.get(("postgres", tasks))
        if database == "mariadb" and pg is not None:
            lines.append(f"| {tasks} | {pg['pairs_per_s']:,.0f} | {pg['in_q']:.2f} Q | "
                         f"{r['pairs_per_s']:,.0f} | {r['in_q']:.2f} Q | {r['stale']} |")
    return [*lines, ""]


def servers_table(res: Results, tasks: int) -> list[str]:
    rows = [r for r in res.records if r["group"] == "servers"]
    if not rows:
        return []
    ours = [r for r in res.records if r["group"] == "page" and r["case"] == "GET /"
            and r["tasks"] == tasks]
    lines = [f"#### The app's `GET /` under other servers ({tasks} tasks, 2 workers)", "",
             "| server | cache | " + RATE_HEADER, "|---|---|" + RATE_ALIGN]
    for r in ours + rows:
        lines.append(f"| {r['server']} | {r['cache']} | {rate_cells(r)} |")
    return [*lines, ""]


def short_run(meta: Record) -> list[str]:
    """A warning when the run measured less than the default run does."""
    changed = []
    for key, default in DEFAULTS.items():
        if (value := meta[key]) != default:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            changed.append(f"--{key.replace('_', '-')} {shown}")
    if not changed:
        return []
    return [f"**A short run** (`{' '.join(changed)}`), not the default run: fewer sizes, "
            "runs or rounds; what it did not measure is \"not measured\" below.", ""]


def side_by_side_line(meta: Record) -> str:
    if meta.get("peer"):
        return ("This run measured the app beside the tutorial app first (`--peer`): those "
                "figures, under \"Beside the tutorial app\", are the goals; what follows are "
                "diagnostics.")
    return ("The side-by-side with the tutorial app was **not run** (no `--peer`): the figures "
            "under \"Beside the tutorial app\" are from an earlier run. What follows are "
            "diagnostics, not goals.")


def render(res: Results, meta: Record) -> str:
    v, m, config = meta["versions"], meta["machine"], meta["hypercorn_toml"]
    packages = ", ".join(f"{p} {v[p]}" for p in PACKAGES)
    workers = meta["workers"] or config.get("workers", 1)
    lines = [
        f"Written by `{SCRIPT}` on {meta['date']}. Command:", "", "```", meta["command"], "```",
        "", *short_run(meta), side_by_side_line(meta), "",
        f"Each measurement: {meta['rounds']} round(s) of `wrk -t{THREADS} -c{CONNECTIONS} "
        f"-d{meta['seconds']}s --latency` against "
        "`hypercorn --config hypercorn.toml 'app:create_app()'` "
        f"(worker class {config.get('worker_class', 'asyncio')}, {workers} workers), "
        "`APP_ENV=production`, on a fresh PostgreSQL database and one memcached; \"cache off\" "
        "is `CACHE_ENABLED=0`. The table is seeded with SQL and memcached flushed; a cached "
        "round starts once a probe sees `X-Cache: hit` (the X-Cache column), and the probe "
        "(no decompression, like wrk) shows the encoding and size served. wrk, the servers, "
        "PostgreSQL and memcached share the machine, whose speed drifts during a run, so "
        "every ratio is paired: the baseline servers stay up for the whole run, and between "
        f"every two rounds a Q run (`wrk -d{meta['q_seconds']}s` on `quart_app`, a bare "
        "Quart app serving a constant 5 KB page) is measured, with, beside cached rounds, "
        "an H run (`hit_floor_app` under uvloop, the cheapest possible cache hit). A round "
        "in Q is its rate over the mean of the Q runs just before and after it; \"in Q\" is "
        "the median over rounds (each listed under \"rounds, in Q\"), \"in H\" likewise "
        "against the H runs, and req/s, avg and p99 are the medians over rounds. The 304 and "
        "its cached 200 alternate within each round; their req/s are the best of each.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, {m['os']}. "
        f"Python {v['python']}; {packages}; PostgreSQL {v['postgres']}; MariaDB "
        f"{v.get('mariadb', '-')}; memcached "
        f"{v['memcached']}; wrk {v['wrk']}.",
        "",
        *baseline_table(res, meta),
        *[line for group in GROUP_TITLES for line in case_table(res, group)],
        *not_modified_table(res),
        *write_read_table(res),
        *mysql_table(res),
        *servers_table(res, meta["server_size"]),
        "Diagnostics (computed from the figures above, in paired Q; not goals: the goals "
        "are the side-by-side's, under \"Beside the tutorial app\"):", "",
        *[goal.line() for goal in diagnostics(res)],
    ]
    return "\n".join(lines)


SERIES = (*((c.group, c.label) for c in CASES), ("304", "GET / If-None-Match"))


def chart(res: Results, path: Path) -> None:
    """req/s against tasks (log x), one line per case, the run's median Q as a horizontal
    line; and each case's paired ratio in Q, with H's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, units) = plt.subplots(1, 2, figsize=(13, 7))
    colours = iter(plt.get_cmap("tab20").colors)
    for group, case in SERIES:
        for cache in ("on", "off"):
            points = sorted((r["tasks"], r["rps"], r["in_q"]) for r in res.records
                            if r["group"] == group and r.get("case") == case
                            and r.get("server") == "hypercorn" and r["cache"] == cache
                            and "skipped" not in r)
            if points:
                xs, ys, qs = zip(*points, strict=True)
                style = {"linestyle": "-" if cache == "on" else "--", "marker": "o",
                         "color": next(colours), "label": f"{case}, cache {cache}"}
                rates.plot(xs, ys, **style)
                units.plot(xs, qs, **style)
    loops = sorted((r["tasks"], r["pairs_per_s"], r["in_q"]) for r in res.records
                   if r["group"] == "write-read" and r.get("invalidation_log", True)
                   and r.get("database") == "postgres")
    if loops:
        xs, ys, qs = zip(*loops, strict=True)
        style = {"linestyle": ":", "marker": "s", "color": "black",
                 "label": f"write then read ({WRITERS} writers), pairs/s"}
        rates.plot(xs, ys, **style)
        units.plot(xs, qs, **style)
    q_line = {"color": "grey", "linewidth": 3, "alpha": 0.6,
              "label": f"Q, the run's median: {res.q:,.0f} req/s (bare Quart app, 5 KB page)"}
    rates.axhline(res.q, **q_line)
    units.axhline(1.0, **q_line)
    units.axhline(2.0, color="grey", linewidth=1, linestyle=":", label="2 Q (cached goal)")
    if not math.isnan(res.floor_in_q):
        units.axhline(res.floor_in_q, color="tab:red", linewidth=1, linestyle="-.",
                      label=f"H (cheapest cache hit) = {res.floor_in_q:.2f} Q")
    for axes, ylabel in ((rates, "requests/s"), (units, "requests/s / Q")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("tasks in the table")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
    rates.set_title("requests/s (medians over rounds)")
    units.set_title("in Q (each against the Q runs beside it)")
    handles, labels = units.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("Task list over HTTP (hypercorn as in production)")
    figure.tight_layout(rect=(0, 0.15, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
