"""Hostile files from other projects' test suites: each ends in a form, a reason or "no form",
within 30 s and the 1 GiB allowance, read through the worker pool as production reads mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.extraction import message_around
from parsers.model import Submission
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec


@pytest.mark.timeout(600)
def test_hostile_inputs_end_in_an_outcome(shared_dir: Path, smp_spec: FormSpec) -> None:
    files = sorted(path for folder in ("eml", "docx", "pdf") for path in (shared_dir / "hostile" / folder).iterdir())
    assert len(files) > 100
    with ParserPool(2, timeout_s=30, memory_mb=1024) as pool:
        jobs = []
        for path in files:
            raw = path.read_bytes() if path.parent.name == "eml" else message_around(path)
            jobs.append((path.name, pool.submit(raw, smp_spec)))
        results: dict[str, Submission] = {name: future.result(timeout=120) for name, future in jobs}
    contained = {
        name: submission.unreadable.detail
        for name, submission in results.items()
        if submission.unreadable is not None and submission.unreadable.attachment == "(message)"
    }
    assert not contained, contained  # no timeout, no memory overrun, no crashed worker
    assert all(submission.status in ("form", "unreadable", "no_form") for submission in results.values())
    by_name = {name.split("__", 1)[1]: submission for name, submission in results.items()}
    assert by_name["password-example.pdf"].unreadable is not None
    assert by_name["password-example.pdf"].unreadable.reason == "encrypted"
    assert by_name["bug53475-password-is-pass.docx"].unreadable is not None
    assert by_name["bug53475-password-is-pass.docx"].unreadable.reason == "encrypted"
