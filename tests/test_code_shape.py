"""The size limits of docs/architecture.md, checked over every module of the project.

A module over 400 lines, a class over 250 or a function over 60 is a sign that it does more than
one job. Where one job really is that long (a format reader's state machine, a migration that writes
a whole schema), its docstring says so with the words "Long because" and the reason; anything else
over a limit fails here, named with its place and length.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mailbot", "parsers", "storage", "templates", "benchmarks")
MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 400, 250, 60
REASON = "Long because"

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _excused(node: ast.Module | Definition) -> bool:
    return REASON in (ast.get_docstring(node) or "")


def oversized(path: Path, root: Path = ROOT) -> list[str]:
    """Each module, class or function of ``path`` over its limit without a reason, as ``place: lines``."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    name = path.relative_to(root).as_posix()
    found = []
    lines = len(source.splitlines())
    if lines > MODULE_LINES and not _excused(tree):
        found.append(f"{name}: module of {lines} lines (limit {MODULE_LINES})")
    for node in ast.walk(tree):
        if not isinstance(node, Definition) or node.end_lineno is None:
            continue
        length = node.end_lineno - node.lineno + 1
        limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
        if length > limit and not _excused(node):
            found.append(f"{name}:{node.lineno} {node.name}: {length} lines (limit {limit})")
    return found


def test_the_checker_finds_what_is_over_a_limit(tmp_path: Path) -> None:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def long():\n{long_body}\n\ndef excused():\n    '''{REASON} of a test.'''\n{long_body}\n")
    assert oversized(sample, tmp_path) == [f"sample.py:1 long: {FUNCTION_LINES + 1} lines (limit {FUNCTION_LINES})"]


@pytest.mark.parametrize("path", _sources(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_module_class_or_function_is_over_its_limit_without_a_reason(path: Path) -> None:
    assert oversized(path) == []
