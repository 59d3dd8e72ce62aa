"""The worker pool: results come back, and a job that overruns time or memory still resolves."""

from __future__ import annotations

import errno
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from parsers.sandbox import ParserPool, read_message_contained
from parsers.spec import FormSpec
from tests.parsers.builders import DOCX_TYPE, SMP_ROWS, message, mime_part, table_form, text_part

RAW = message([text_part("见附件"), mime_part(table_form(SMP_ROWS), DOCX_TYPE, b'attachment; filename="form.docx"')])


def test_pool_reads_in_workers_from_bytes_or_from_a_file(smp_spec: FormSpec, tmp_path: Path) -> None:
    archived = tmp_path / "message.eml"
    archived.write_bytes(RAW)
    with ParserPool(2, timeout_s=60, memory_mb=512) as pool:
        futures = [pool.submit(source, smp_spec) for source in (RAW, archived, RAW)]
        submissions = [future.result(timeout=120) for future in futures]
    assert all(submission.form is not None for submission in submissions)
    assert submissions[0].form is not None and submissions[0].form.value("topic") == "3.2"
    assert submissions[1] == submissions[0], "the worker reads the file itself: the same reading"


def test_a_job_given_as_a_file_still_resolves_when_its_worker_is_stopped(smp_spec: FormSpec, tmp_path: Path) -> None:
    archived = tmp_path / "message.eml"
    archived.write_bytes(RAW)
    with ParserPool(1, timeout_s=0.001, memory_mb=512) as pool:
        late = pool.submit(archived, smp_spec).result(timeout=60)
    assert late.unreadable is not None and late.unreadable.reason == "timeout"
    assert late.envelope.message_id == "<test.1@example.org>"
    assert [attachment.filename for attachment in late.attachments] == ["form.docx"]


def test_overrunning_worker_is_replaced(smp_spec: FormSpec) -> None:
    with ParserPool(1, timeout_s=0.001, memory_mb=512) as pool:
        late = pool.submit(RAW, smp_spec).result(timeout=60)
        assert late.unreadable is not None and late.unreadable.reason == "timeout"
        assert late.envelope.message_id == "<test.1@example.org>"  # still decidable
        assert [attachment.filename for attachment in late.attachments] == ["form.docx"]
        pool.timeout_s = 60
        assert pool.submit(RAW, smp_spec).result(timeout=120).form is not None


def test_memory_allowance_is_enforced(smp_spec: FormSpec) -> None:
    starved = read_message_contained(RAW, smp_spec, timeout_s=60, memory_mb=1)
    assert starved.form is None
    assert starved.unreadable is not None and starved.unreadable.reason == "too-large"
    assert starved.envelope.message_id == "<test.1@example.org>"


def test_single_shot(smp_spec: FormSpec) -> None:
    submission = read_message_contained(RAW, smp_spec, timeout_s=60, memory_mb=512)
    assert submission.form is not None


def test_a_job_resolves_when_no_reader_process_can_be_started(
    smp_spec: FormSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork() fails (the process limit is reached, memory is short): the message is still decided, on
    its header block, rather than leave the pool's thread dead and the job waiting for ever."""

    def no_more_processes(self: BaseProcess) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(BaseProcess, "start", no_more_processes)
    with ParserPool(1, timeout_s=60, memory_mb=512) as pool:
        submissions = [pool.submit(RAW, smp_spec).result(timeout=30) for _ in range(2)]
    for submission in submissions:
        assert submission.unreadable is not None and submission.unreadable.reason == "corrupt"
        assert submission.envelope.message_id == "<test.1@example.org>"  # still decidable
