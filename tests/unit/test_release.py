"""The release digest: the same files give the same digest in every process; any change to
code, templates or static files gives another."""

from pathlib import Path

from app.release import release_digest


def make_tree(root: Path) -> None:
    for name, text in {
        "app/views.py": "print('hi')",
        "templates/page.html": "<p>page</p>",
        "static/css/app.css": "p {}",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_same_files_give_the_same_digest(tmp_path: Path) -> None:
    make_tree(tmp_path / "one")
    make_tree(tmp_path / "two")
    assert release_digest(tmp_path / "one") == release_digest(tmp_path / "two")


def test_any_change_to_code_templates_or_static_files_changes_it(tmp_path: Path) -> None:
    make_tree(tmp_path)
    seen = {release_digest(tmp_path)}
    for name in ("app/views.py", "templates/page.html", "static/css/app.css"):
        (tmp_path / name).write_text((tmp_path / name).read_text() + " ")
        seen.add(release_digest(tmp_path))
    (tmp_path / "templates/page.html").rename(tmp_path / "templates/other.html")
    seen.add(release_digest(tmp_path))
    assert len(seen) == 5


def test_compiled_bytecode_is_not_part_of_the_release(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = release_digest(tmp_path)
    (tmp_path / "app/__pycache__").mkdir()
    (tmp_path / "app/__pycache__/views.cpython-313.pyc").write_bytes(b"\x00bytecode")
    assert release_digest(tmp_path) == before
