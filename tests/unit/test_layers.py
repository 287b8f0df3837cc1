"""The layers of DESIGN.md, section 3, as a rule on imports: a module of `app` imports only
from its own layer or those below it. Data flows one way: views -> the tasks service ->
its repository or the cache; the cache core knows nothing of the app above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

# Lowest first; a module's layer is that of the longest prefix of its dotted name listed.
LAYERS: list[tuple[str, ...]] = [
    ("app.asgi", "app.throttled_log"),
    ("app.cache",),  # the cache-aside core: no settings, no web framework, no tasks
    ("app.settings", "app.release"),
    ("app.db",),
    ("app.invalidation", "app.tasks"),  # the service and its repository
    (  # the web framework's side of things
        "app.webcache", "app.htmx", "app.templating", "app.errors", "app.proxies",
        "app.limits", "app.security", "app.request_metrics", "app.metrics", "app.request_log",
    ),
    ("app.state",),  # what a process opens
    ("app.health", "app.operator_access", "app.write_limit"),
    ("app.web", "app.api"),  # HTTP: parse, call, render
    ("app", "app.serve"),  # create_app, and serving it
]


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), number)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every `app` module `path` imports, type-checking ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from app import state`: the submodule; `from app.x import name`: app.x.
            found += [(node.lineno, name if name_is_module(name) else base) for name in names]
    return [(line, name) for line, name in found if name == "app" or name.startswith("app.")]


def name_is_module(name: str) -> bool:
    path = PROJECT_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted((PROJECT_ROOT / "app").rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_from_a_layer_above_its_own(path: Path) -> None:
    module = module_name(path)
    own = layer_of(module)
    upward = [
        f"line {line}: {name}" for line, name in imported(path, module)
        if layer_of(name) > own
    ]
    assert upward == [], f"{module} (layer {own}) imports from above: {upward}"


def test_the_rule_sees_every_form_of_an_upward_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from app import state\n"
        "from ..tasks.service import TaskService\n"
        "if True:\n    import app.web.views\n"
    )
    found = [name for _, name in imported(probe, "app.cache.probe")]
    assert found == ["app.state", "app.tasks.service", "app.web.views"]
    assert all(layer_of(name) > layer_of("app.cache.probe") for name in found)
