"""Writes benchmark results into docs/PERFORMANCE.md, leaving the hand-written notes alone.

Each benchmark owns the lines between its two markers, under its heading; everything else
in the file (what the numbers mean, what was tried) is written by people. A conclusion that
depends on a run is computed by the script that measured it, never typed into it.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def write_results(script: str, heading: str, text: str, doc_path: Path = DOC,
                  before: str | None = None) -> None:
    """Replace what `script` wrote last time with `text` (or add `heading` and it: at the
    end, or just above the line `before` if the document has it)."""
    begin = f"<!-- results of {script}: begin (rewritten by each run) -->"
    end = f"<!-- results of {script}: end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    doc = doc_path.read_text() if doc_path.exists() else "# Performance\n"
    start, stop = doc.find(begin), doc.find(end)
    if start != -1 and stop > start:
        doc = doc[:start] + block + doc[stop + len(end):]
    elif before is not None and (at := doc.find(f"\n{before}\n")) != -1:
        doc = f"{doc[:at].rstrip()}\n\n{heading}\n\n{block}\n\n{doc[at + 1:]}"
    else:
        doc = f"{doc.rstrip()}\n\n{heading}\n\n{block}\n"
    doc_path.write_text(doc)
