"""The identity of the code being served, for cache keys that must not outlive a deploy.

Every process of one release computes the same digest (it depends on the files only), so
app instances share their cached pages and fragments; a deploy that changes any code,
template or static file gets new keys, so no page rendered by the old code is served after
it. Generation tokens and memoized data are keyed without it: those stay shared across
releases, so a write through an old instance still invalidates what a new one reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from app.settings import PROJECT_ROOT

RELEASE_DIRECTORIES = ("app", "templates", "static")
_SKIPPED = {"__pycache__"}


def release_digest(root: Path = PROJECT_ROOT) -> str:
    """A short digest of every file under `RELEASE_DIRECTORIES` (names and contents)."""
    digest = hashlib.sha256()
    for directory in RELEASE_DIRECTORIES:
        for path in sorted((root / directory).rglob("*")):
            if path.is_file() and _SKIPPED.isdisjoint(path.relative_to(root).parts):
                data = path.read_bytes()
                digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode())
                digest.update(data)
    return digest.hexdigest()[:16]
