"""The app as bench/rss_probe.py serves it: `app:create_app()` plus, in each worker, two
signal handlers that say what its memory holds. Diagnostics only; production never loads it.

- SIGUSR1: a dump into `$RSS_PROBE_DIR`: the live objects counted by type, glibc's
  `mallinfo2` (heap in use against heap kept free), and, when `$RSS_PROBE_TRACEMALLOC`
  (frames per traceback) is set, a tracemalloc snapshot (tracing starts when serving does).
- SIGUSR2: `malloc_trim(0)`, so that RSS before and after tells free heap kept by malloc
  (fragmentation) from memory still held by objects (a leak, or a memo filling).
- SIGRTMIN: empty the per-process memos of the cache client, its backend and the view
  cache, then collect and trim; SIGRTMIN+1 likewise the recent responses. The RSS each
  gives back is what that holds.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import signal
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from quart import Quart

from app import create_app as create_real_app
from app.state import find_state
from app.webcache.middleware import ViewCacheMiddleware

MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
             "uordblks", "fordblks", "keepcost")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2]


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = MallInfo2


def create_app() -> Quart:
    app = create_real_app()
    out = os.environ.get("RSS_PROBE_DIR")
    if out:
        frames = int(os.environ.get("RSS_PROBE_TRACEMALLOC") or 0)

        @app.before_serving
        async def install_probe() -> None:
            if frames:
                tracemalloc.start(frames)
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, dump, app, Path(out))
            loop.add_signal_handler(signal.SIGUSR2, LIBC.malloc_trim, 0)
            loop.add_signal_handler(signal.SIGRTMIN, clear_memos, app)
            loop.add_signal_handler(signal.SIGRTMIN + 1, clear_recent, app)

    return app


def view_cache(app: Quart) -> ViewCacheMiddleware:
    """The view cache among the ASGI wrappers around the app."""
    layer = app.asgi_app
    while not isinstance(layer, ViewCacheMiddleware):
        layer = getattr(layer, "asgi_app", None) or layer.app  # type: ignore[attr-defined]
    return layer


def memos(app: Quart) -> dict[str, int]:
    """How many entries each per-process memo holds (and the recent responses' bytes)."""
    client = find_state(app).cache_service.client  # type: ignore[union-attr]
    backend = client.backend
    views = view_cache(app)
    sizes = {"client.rows": len(client._rows), "views.keys": len(views._keys),
             "views.matches": len(views._matches), "recent.responses": len(views.recent),
             "recent.bytes": views.recent.bytes}
    lru = {"client.where": client._where, "backend.raw": backend._raw,
           "backend.lookup": getattr(backend, "_lookup", None)}
    for name, memo in lru.items():
        if memo is not None:
            info = memo.cache_info()
            sizes |= {name: info.currsize, f"{name}.hit%": round(
                100 * info.hits / max(1, info.hits + info.misses), 1)}
    return sizes


def clear_memos(app: Quart) -> None:
    client = find_state(app).cache_service.client  # type: ignore[union-attr]
    client._where.cache_clear()
    client._rows.clear()
    client.backend._raw.cache_clear()
    if hasattr(client.backend, "_lookup"):
        client.backend._lookup.cache_clear()
    view_cache(app)._keys.clear()
    view_cache(app)._matches.clear()
    gc.collect()
    LIBC.malloc_trim(0)


def clear_recent(app: Quart) -> None:
    recent = view_cache(app).recent
    for key in list(recent._responses):
        recent.discard(key)
    gc.collect()
    LIBC.malloc_trim(0)


def dump(app: Quart, out: Path) -> None:
    """Write `<pid>-<unix time>.json` (and `.tm`, the tracemalloc snapshot) into `out`."""
    stem = out / f"{os.getpid()}-{int(time.time())}"
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(f"{stem}.tm")
    info = LIBC.mallinfo2()
    types = Counter(type(obj).__qualname__ for obj in gc.get_objects())
    record = {
        "mallinfo2": {name: getattr(info, name) for name in MALLINFO2},
        "traced": tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else None,
        "memos": memos(app),
        "gc_objects": sum(types.values()),
        "types": dict(types.most_common(60)),
    }
    Path(f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
