"""One header reader: what intake records and what the envelope says are the same reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.admin.importer import newest_received
from parsers.headers import MAX_HEADER_TEXT, header_facts, read_headers
from parsers.mime import read_envelope


def _messages(shared_dir: Path) -> list[Path]:
    files = sorted(path for set_ in ("realworld", "hostile") for path in (shared_dir / set_ / "eml").glob("*"))
    if not files:
        pytest.skip(f"the real-world and hostile sets are not under {shared_dir}")
    return files


def test_intake_facts_agree_with_the_envelope(shared_dir: Path) -> None:
    """Message-ID, From, Subject, Date and the arrival stamp read at intake (or from the header block
    alone, as for a message over the size limit) are the envelope's, for every message."""
    disagreements = []
    for path in _messages(shared_dir):
        raw = path.read_bytes()
        facts = header_facts(raw)
        envelope = read_envelope(raw)
        seen = (facts.message_id, facts.from_addr, facts.subject, read_headers(raw).date, newest_received(raw))
        expected = (
            envelope.message_id,
            envelope.from_addr,
            " ".join(envelope.subject.split())[:MAX_HEADER_TEXT],
            envelope.date,
            envelope.received_times[0] if envelope.received_times else None,
        )
        if seen != expected:
            disagreements.append((path.name, seen, expected))
    assert disagreements == []


def test_leading_blank_lines_do_not_hide_the_headers() -> None:
    raw = b"\r\n  \r\nMessage-ID: <x1@example.org>\r\nFrom: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    facts = header_facts(raw)
    assert (facts.message_id, facts.from_addr, facts.subject) == ("<x1@example.org>", "a@example.org", "hi")
