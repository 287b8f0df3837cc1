"""Hostile notes: the XSS vectors every path that takes notes is tried with.

Each vector carries a `marker`, a plain word that must still be on the page as text once
the notes are rendered (nothing is silently dropped), next to markup that must not survive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vector:
    id: str
    notes: str
    marker: str


VECTORS = (
    Vector("script", "<script>alert('script-1')</script> marker-script", "marker-script"),
    Vector("img-onerror", "<img src=x onerror=alert('img-2')> marker-img", "marker-img"),
    Vector("svg-onload", "<svg/onload=alert('svg-3')><circle r=1></svg> marker-svg", "marker-svg"),
    Vector("svg-script", "<svg><script>alert('svg-4')</script></svg> marker-svgscript",
           "marker-svgscript"),
    Vector("javascript-link", "[marker-js](javascript:alert('js-5'))", "marker-js"),
    Vector("mixed-case-link", "[marker-case](JaVaScRiPt:alert('case-6'))", "marker-case"),
    Vector("entity-link", "[marker-entity](java&#115;cript:alert('entity-7'))", "marker-entity"),
    Vector("tab-link", "[marker-tab](java\tscript:alert('tab-8'))", "marker-tab"),
    Vector("angle-link", "[marker-angle](<javascript:alert('angle-9')>)", "marker-angle"),
    Vector("data-link", "[marker-data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxMCk8L3NjcmlwdD4=)",
           "marker-data"),
    Vector("autolink", "<javascript:alert('auto-11')> marker-auto", "marker-auto"),
    Vector("reference-link", "[marker-ref][x]\n\n[x]: javascript:alert('ref-12')", "marker-ref"),
    Vector("image", "![marker-image](javascript:alert('image-13'))", "marker-image"),
    Vector("event-in-link-title",
           '[marker-title](https://example.com "x\\" onmouseover=alert(14)")', "marker-title"),
    Vector("iframe", "<iframe src=javascript:alert('iframe-15')></iframe> marker-iframe",
           "marker-iframe"),
    Vector("style", "<style>*{display:none}</style><div style=x:expression(alert(16))>"
           "marker-style</div>", "marker-style"),
    Vector("unclosed", "<b onmouseover=alert('unclosed-17') marker-unclosed", "marker-unclosed"),
    Vector("nested", "<<script>script>alert('nested-18')<</script>/script> marker-nested",
           "marker-nested"),
    Vector("html-block", "<div>\n<a href=javascript:alert('block-19')>marker-block</a>\n</div>",
           "marker-block"),
    Vector("code", "`<script>alert('code-20')</script>` marker-code", "marker-code"),
    Vector("deep-quotes", ">" * 5_000 + " marker-quotes", "marker-quotes"),
    Vector("deep-lists", "".join("  " * n + "- x\n" for n in range(60)) + "marker-lists",
           "marker-lists"),
    Vector("deep-html", "<div>" * 1_600 + "marker-divs" + "</div>" * 100, "marker-divs"),
    Vector("deep-emphasis", "*_" * 4_990 + "marker-em", "marker-em"),
)
