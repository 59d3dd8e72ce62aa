"""The benchmarks run end to end on a small load (speed is never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import decisions, rush
from tests.conftest import ImapServer


@pytest.mark.dovecot
@pytest.mark.timeout(60)
def test_rush_answers_every_submission_in_both_modes(tmp_path: Path, dovecot: ImapServer) -> None:
    # the fixture only proves Dovecot can run here (and fails under CI when it cannot): the
    # benchmark starts its own
    out = tmp_path / "rush.json"

    assert rush.main(["--n", "12", "--mode", "both", "--pdf-forms", "1", "--json", str(out)]) == 0

    summary = json.loads(out.read_text(encoding="utf-8"))
    answered = summary["n"] - summary["kinds"].get("auto-reply", 0)
    for prefix in ("", "single_"):
        assert summary[f"{prefix}processed"] == summary["n"]
        assert summary[f"{prefix}acknowledged"] == answered
        assert summary[f"{prefix}unanswered"] == 0
        assert summary[f"{prefix}errors"] == []
        assert 0 < summary[f"{prefix}p50_latency_s"] <= summary[f"{prefix}max_latency_s"]
        assert summary[f"{prefix}peak_rss_mb"] > 0
        assert summary[f"{prefix}peak_pss_total_mb"] > 0
        assert summary[f"{prefix}stages"]["fetch"] > 0
        assert summary[f"{prefix}cpu_s"]["bot"] > 0
    assert summary["mode"] == "pool"
    assert summary["peak_rss_worker_mb"] > 0
    assert summary["cpu_s"]["parser workers"] > 0 and summary["single_cpu_s"]["parser workers"] == 0
    assert summary["floor_cpu_s"]["floor"] > 0
    assert summary["floor_s"] > 0
    assert summary["ratio_to_floor"] == pytest.approx(summary["bot_s"] / summary["floor_s"])


@pytest.mark.timeout(60)
def test_decisions_benchmark_decides_every_message(tmp_path: Path) -> None:
    out = tmp_path / "decisions.json"

    assert decisions.main(["--n", "30", "--json", str(out), "--profile", str(tmp_path / "decide.prof")]) == 0

    summary = json.loads(out.read_text(encoding="utf-8"))
    assert summary["n"] == 30
    assert sum(summary["outcomes"].values()) == 30
    # the load's forms are all made by the project's own generator: every one must be read
    assert summary["outcomes"].get("accepted", 0) > 0 and "unreadable" not in summary["outcomes"]
    assert summary["cpu_s"] > 0 and summary["wall_s"] > 0
    assert summary["ms_per_message"] == pytest.approx(1000 * summary["wall_s"] / 30)
    assert (tmp_path / "decide.prof").stat().st_size > 0
