"""Markdown notes to safe HTML (`app.tasks.notes`): what renders, and what never passes."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from app.tasks.notes import ALLOWED_TAGS, LINK_REL, MAX_NESTING, render_notes
from tests.support.xss import VECTORS, Vector

ALLOWED_ATTRIBUTES = {("a", "href"), ("a", "title"), ("a", "rel"), ("ol", "start"),
                      ("pre", "class")}


class Elements(HTMLParser):
    """Every start tag of a fragment with its attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_commonmark_lists_links_code_and_emphasis_render() -> None:
    html = render_notes(
        "# Plan\n\n1. *first*\n2. **second** with `code`\n\n- [docs](https://example.com/a?b=1)"
        "\n- <mailto:me@example.com>\n\n```\nx < y\n```\n\n> quoted"
    )
    assert "<h1>Plan</h1>" in html
    assert "<li><em>first</em></li>\n<li><strong>second</strong> with <code>code</code>" in html
    assert f'<a href="https://example.com/a?b=1" rel="{LINK_REL}">docs</a>' in html
    assert f'<a href="mailto:me@example.com" rel="{LINK_REL}">mailto:me@example.com</a>' in html
    assert "<pre><code>x &lt; y\n</code></pre>" in html
    assert "<blockquote>\n<p>quoted</p>\n</blockquote>" in html


def test_empty_notes_render_nothing() -> None:
    assert render_notes("") == ""


def test_relative_links_stay_and_ordered_lists_keep_their_start() -> None:
    html = render_notes("3. [up](/tasks)\n4. y")
    assert html.startswith('<ol start="3">')
    assert f'<a href="/tasks" rel="{LINK_REL}">up</a>' in html


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
def test_no_hostile_markup_survives_and_the_text_stays(vector: Vector) -> None:
    html = render_notes(vector.notes)
    elements = Elements(html)
    for tag, attrs in elements.tags:
        assert tag in ALLOWED_TAGS, html[:500]
        for name, value in attrs.items():
            assert (tag, name) in ALLOWED_ATTRIBUTES, html[:500]
            if name == "href":
                assert value is not None
                assert value.startswith(("https:", "http:", "mailto:", "/")), value
            if name == "rel":
                assert value == LINK_REL
    assert vector.marker in "".join(elements.text)


def test_notes_nested_deeper_than_the_parser_follows_are_shown_as_text() -> None:
    source = "> " * MAX_NESTING + "deep <b>text</b>"
    html = render_notes(source)
    assert html.startswith('<pre class="notes-plain">&gt; &gt; ')
    assert html.endswith("deep &lt;b&gt;text&lt;/b&gt;</pre>")
    shallow = render_notes("> " * 10 + "deep")
    assert shallow.count("<blockquote>") == 10 and "deep" in shallow
