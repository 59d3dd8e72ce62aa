"""storage/ is the layer under mailbot/: it imports nothing of mailbot/, so any stage or admin command
can open it without the rest of the bot, and its operations take and give plain values."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STORAGE = Path(__file__).resolve().parent.parent / "storage"


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


@pytest.mark.parametrize("path", sorted(STORAGE.rglob("*.py")), ids=lambda path: path.relative_to(STORAGE).as_posix())
def test_storage_imports_nothing_of_mailbot(path: Path) -> None:
    assert [name for name in _imported_modules(path) if name.split(".")[0] == "mailbot"] == []
