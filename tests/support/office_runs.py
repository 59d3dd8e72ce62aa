"""Counting LibreOffice runs: how many documents each run of ``parsers.convert`` was given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parsers import convert as convert_module


def counting_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of documents of each LibreOffice run from now on."""
    runs: list[int] = []
    run: Callable[..., Any] = convert_module._run_office

    def counted(binary: str, work: Path, sources: list[Path], target: str, timeout_s: float) -> Any:
        runs.append(len(sources))
        return run(binary, work, sources, target, timeout_s)

    monkeypatch.setattr(convert_module, "_run_office", counted)
    return runs
