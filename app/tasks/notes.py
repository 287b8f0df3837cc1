"""Task notes: Markdown source in, safe HTML out.

`render_notes(source)` is CommonMark (markdown-it-py's `commonmark` preset: paragraphs,
emphasis, lists, links, code, quotes, headings) with raw HTML switched off, so HTML in a
note is shown as text, escaped; images are not rendered (their Markdown reads as a link).
The HTML then goes through nh3 (ammonia) with an allowlist of exactly the tags and
attributes that Markdown produces: no script, no event handler or style attribute, no
`javascript:`, `data:` or other link than `http`, `https`, `mailto` and relative ones,
and every link gets `rel="nofollow noopener noreferrer"`. The output is a well-formed HTML
fragment (unclosed or misnested markup is closed by the sanitiser's HTML5 parser).

Notes nested deeper than the parser follows (`MAX_NESTING` levels of quotes, lists and
emphasis, past which markdown-it drops the rest) are shown as plain text instead, escaped,
in a `<pre>`: no text is ever lost.

Pure and deterministic: the same source always gives the same HTML, so it can be cached.
Why these two libraries: docs/NOTES.md.
"""

from __future__ import annotations

from html import escape
from typing import Final

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS: Final = frozenset({
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "h1", "h2", "h3", "h4", "h5", "h6",
})
LINK_REL: Final = "nofollow noopener noreferrer"

MAX_NESTING: Final = 50
_markdown = MarkdownIt("commonmark", {"html": False, "maxNesting": MAX_NESTING}).disable("image")
_sanitiser = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    url_schemes={"http", "https", "mailto"},
    link_rel=LINK_REL,
    strip_comments=True,
)


def render_notes(source: str) -> str:
    """The notes as sanitised HTML (see the module docstring); empty for empty notes."""
    if not source:
        return ""
    tokens = _markdown.parse(source)
    if any(token.level >= MAX_NESTING - 1 for token in tokens):
        return f'<pre class="notes-plain">{escape(source, quote=False)}</pre>'
    return _sanitiser.clean(_markdown.renderer.render(tokens, _markdown.options, {}))
