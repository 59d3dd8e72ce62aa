"""The envelope-only rules decide on the header block exactly what the full reading decides.

The pipeline tries :data:`mailbot.rules.ENVELOPE_RULES` on an archived message's header block before
handing it to the parser pool, and a hit is decided without reading the attachments. That is safe
only if, for every message, the verdict on the headers is either no verdict or the very decision the
full reading gives: enumerated here over the dev corpus, the real-world set and the hostile set.
Only the messages the headers decide are read in full, so this stays a header-parsing test.

What the full reading alone knows is, by design, not stored for such a message: its attachments
(rows and the reading's list), its body text, and the ``reason`` an unreadable attachment would have
given an ignored message.
"""

from __future__ import annotations

import tomllib
from concurrent.futures import Future
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.admin.importer import import_one
from mailbot.config import example_config_text, parse_settings
from mailbot.decide import decide, envelope_verdict
from mailbot.decision import CallRules, Outcome
from mailbot.decision_rows import decision_record, person_columns
from mailbot.demo import local_config
from mailbot.intake import read_as_archived
from mailbot.rules import DECISION_RULES, ENVELOPE_RULES
from mailbot.worker import Worker
from parsers.headers import header_facts, message_id_in, read_headers
from parsers.limits import Limits
from parsers.message import read_message
from parsers.model import Submission
from parsers.spec import FormSpec
from storage.archive import HEAD_BYTES
from storage.models import Event, Message

SETTINGS = parse_settings(tomllib.loads(example_config_text()), "config.example.toml")
CALL = SETTINGS.call[0]
RULES = CallRules.from_settings(CALL, SETTINGS.own_addresses)
LIMITS = Limits()
ARRIVAL = datetime(2024, 8, 20, 2, 0, tzinfo=UTC)
SETS = ("corpus/dev", "realworld", "hostile")
UNUSED = ("127.0.0.1", 9)  # no server is contacted: the message is imported, decided, nothing sent


def test_the_envelope_rules_lead_the_sequence() -> None:
    assert ENVELOPE_RULES and DECISION_RULES[: len(ENVELOPE_RULES)] == ENVELOPE_RULES
    assert all(rule.envelope_only for rule in ENVELOPE_RULES)
    assert not DECISION_RULES[len(ENVELOPE_RULES)].envelope_only


@pytest.mark.parametrize("mail_set", SETS)
def test_the_headers_decide_nothing_or_what_the_full_reading_decides(shared_dir: Path, mail_set: str) -> None:
    files = sorted((shared_dir / mail_set).rglob("*.eml"))
    assert files, f"no mail in {shared_dir / mail_set}"
    wrong: list[str] = []
    decided = 0
    for path in files:
        raw = path.read_bytes()
        if len(raw) > LIMITS.max_message_bytes:
            continue  # refused unread before any rule (pipeline.start_reading)
        envelope = read_headers(raw[:HEAD_BYTES])  # what the archive's head() gives the pipeline
        verdict = envelope_verdict(envelope, RULES)
        if verdict is None:
            continue
        decided += 1
        # what the pipeline then decides and stores for the header reading, against the full reading
        header_reading, full_reading = Submission(envelope), read_message(raw, CALL.form_spec, LIMITS)
        on_headers = decide(header_reading, path.name, ARRIVAL, RULES, (), frozenset())
        full = decide(full_reading, path.name, ARRIVAL, RULES, (), frozenset())
        if (verdict.outcome, verdict.rule) != (full.outcome, full.rule):
            wrong.append(f"{path.name}: headers {verdict.outcome}/{verdict.rule}, full {full.outcome}/{full.rule}")
        elif decision_record(on_headers) != decision_record(full):
            wrong.append(f"{path.name}: records differ: {decision_record(on_headers)} != {decision_record(full)}")
        elif person_columns(on_headers, header_reading) != person_columns(full, full_reading):
            wrong.append(f"{path.name}: the person columns differ")
        assert full.outcome is Outcome.IGNORED and not full_reading.envelope.bounced_message_ids
    assert not wrong, "\n".join(wrong)
    assert decided, f"no message of {mail_set} is decided on its headers: the test proves nothing there"


def _auto_reply_with_a_form(to: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Zhang Wei <zhang.wei@example.edu.cn>"
    message["To"] = to
    message["Subject"] = "自动回复: 申报表"
    message["Message-ID"] = "<away-1@example.edu.cn>"
    message["Auto-Submitted"] = "auto-replied"
    message.set_content("I am away until September.")
    message.add_attachment(
        b"PK\x03\x04 not read", maintype="application", subtype="octet-stream", filename="申报表.docx"
    )
    return message.as_bytes()


def test_a_machines_mail_is_decided_without_its_attachments_being_read(tmp_path: Path) -> None:
    settings = parse_settings(local_config(tmp_path / "data", UNUSED, UNUSED, "MAILBOT_ENVELOPE_UNUSED"), "envelope")
    with Worker(settings) as bot:

        def never_read(original: Path, spec: FormSpec) -> Future[Submission]:
            raise AssertionError(f"{original} was handed to the parser pool")

        bot.pipeline.readings.reader = never_read
        pk = import_one(
            settings, bot.store, _auto_reply_with_a_form(settings.call[0].addresses[0]), arrival=ARRIVAL
        ).message_pk
        [done] = bot.deciding.decide()
        with bot.store.sessions() as session:
            message = session.get_one(Message, pk)
            decided = session.scalars(select(Event).where(Event.message_pk == pk, Event.kind == "decided")).one()
            assert (done.outcome, message.outcome) == ("ignored", "ignored")
            record = message.decision or {}
            assert (record["rule"], record["rule_hits"], record["rule_misses"]) == (
                "auto-submitted:auto-replied",
                ["machine"],
                [],
            )
            assert (decided.detail["rule_hits"], decided.detail["rule_misses"]) == (["machine"], [])
            assert "the attachments were not read" in " ".join((message.reading or {})["diagnostics"])


def _header_section_of_length(length: int, blank_line: bytes) -> bytes:
    """A message whose header section (to its blank line) is ``length`` bytes, a body after it."""
    start = b"From: a@example.org\r\nMessage-ID: <long@example.org>\r\n"
    received = b"Received: from relay.example.org by mx.example.org\r\n"
    headers = start + received * ((length - len(start)) // len(received))
    headers += b"X-Pad: " + b"x" * max(0, length - len(headers) - len(b"X-Pad: \r\n")) + b"\r\n"
    return headers + blank_line + b"body\r\n" * 100


@pytest.mark.parametrize("mail_set", SETS)
def test_the_envelope_intake_hands_on_is_the_one_reading_takes_from_the_archive(
    shared_dir: Path, mail_set: str
) -> None:
    """Intake hands the envelope it read to reading only where the archive's head would give the same."""
    files = sorted((shared_dir / mail_set).rglob("*.eml"))
    different = [
        file.name
        for file in files
        if read_as_archived(raw := file.read_bytes()) and read_headers(raw) != read_headers(raw[:HEAD_BYTES])
    ]
    assert not different


@pytest.mark.parametrize("blank_line", [b"\r\n", b"\n"])
def test_a_header_section_at_the_archive_heads_length_is_read_again_from_the_archive(blank_line: bytes) -> None:
    for length in range(HEAD_BYTES - 24, HEAD_BYTES + 8):  # where the blank line leaves the head
        raw = _header_section_of_length(length, blank_line)
        if read_as_archived(raw):
            assert read_headers(raw) == read_headers(raw[:HEAD_BYTES]), length
    assert read_as_archived(_header_section_of_length(4000, blank_line))
    assert not read_as_archived(_header_section_of_length(HEAD_BYTES + 10, blank_line))


@pytest.mark.parametrize("mail_set", SETS)
def test_the_imap_summarys_message_id_is_the_one_intake_records(shared_dir: Path, mail_set: str) -> None:
    """The summary reads the Message-ID alone; it must be the one the full header reading records."""
    files = sorted((shared_dir / mail_set).rglob("*.eml"))
    different = [file.name for file in files if message_id_in(raw := file.read_bytes()) != header_facts(raw).message_id]
    assert not different
