"""The whole path against real servers: Dovecot (or pymap), aiosmtpd, SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.export import export_records, message_record
from mailbot.worker import Worker
from storage.models import Event, Message
from tests.conftest import ImapServer, load_corpus, make_config, make_settings
from tests.support.invariants import invariant_violations, is_notice

REPO = Path(__file__).resolve().parent.parent
ANSWERED = {"accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable"}


def _acks_by_original(sink: SmtpSink) -> Counter[str]:
    return Counter(
        email.message_from_bytes(m.raw).get("In-Reply-To", "") for m in sink.received if not is_notice(m.raw)
    )


def rows_unlike_their_events(session: Session) -> list[str]:
    """Messages whose export row, built from their last decision's event (as a workbook of an
    earlier day builds it once a later decision has replaced that one), differs from their row."""
    unlike = []
    for message in session.scalars(select(Message).where(Message.decided_at.is_not(None))):
        kind, detail = session.execute(
            select(Event.kind, Event.detail)
            .where(Event.message_pk == message.id, Event.kind.in_(["decided", "failed"]))
            .order_by(Event.id.desc())
            .limit(1)
        ).one()
        outcome = "unreadable" if kind == "failed" else detail["outcome"]
        from_row = message_record(message)
        from_event = message_record(message, outcome=outcome, earlier=detail)
        if {**from_row, "fields": None} != {**from_event, "fields": None}:
            unlike.append(f"{message.message_key}: {from_row} != {from_event}")
    return unlike


def test_corpus_through_real_servers(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, database_url: str, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir)
    settings = make_settings(tmp_path, imap_server, smtp_sink, database_url)
    with Worker(settings) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        with bot.store.sessions() as session:
            records = export_records(session)
            assert not rows_unlike_their_events(session), "a past day's workbook would show something else"
        for name in truth:
            raw = (corpus_dir / f"{name}.eml").read_bytes()
            assert bot.store.archive.contains(hashlib.sha256(raw).hexdigest()), name

    by_id = Counter(r["message_id"] for r in records)
    assert sorted(by_id) == sorted(t["message_id"] for t in truth.values())
    assert set(by_id.values()) == {1}, "every message has exactly one record"

    # every decision is the one the truth records (outcome, what it supersedes, what it duplicates)
    key_of = {name: info["message_id"] for name, info in truth.items()}
    by_message = {r["message_id"]: r for r in records}
    for name, info in truth.items():
        record = by_message[info["message_id"]]
        expected = (
            info["outcome"],
            key_of.get(info.get("supersedes") or ""),
            key_of.get(info.get("duplicate_of") or ""),
            info.get("reason"),
        )
        assert (record["outcome"], record["supersedes"], record["duplicate_of"], record["reason"]) == expected, name
        if info.get("missing"):
            assert record["missing"] == info["missing"], name

    acks = _acks_by_original(smtp_sink)
    outcome_of = {r["message_id"]: r["outcome"] for r in records}
    for message_id, outcome in outcome_of.items():
        answers = 1 if outcome in ANSWERED else 0
        assert acks.get(message_id, 0) == answers, (message_id, outcome)
    reference_of = {r["message_id"]: r["reference"] for r in records}
    for mail in smtp_sink.received:
        parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        assert not parsed.defects and all(not part.defects for part in parsed.walk())
        if is_notice(mail.raw):  # a form naming an applicant came from another address: they are told
            assert parsed["In-Reply-To"] is None and "【请确认】" in str(parsed["Subject"])
            continue
        original = str(parsed["In-Reply-To"])
        assert original in str(parsed["References"]), "threads to the original"
        body = parsed.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert reference_of[original] in str(parsed["Subject"]) or reference_of[original] in text
        answered = by_message[original]
        if answered["outcome"] == "accepted":
            assert answered["fields"]["applicant_name"] in text and answered["fields"]["project_title"] in text

    # a second run finds nothing new and sends nothing
    before = len(smtp_sink.received)
    with Worker(settings) as bot:
        again = bot.single_pass()
    assert again.errors == []
    assert sum(p.new for p in again.polled) == 0
    assert again.processed == [] and again.sent == []
    assert len(smtp_sink.received) == before


def test_canonical_docx_is_accepted_with_its_fields(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    infos = {p.stem: json.loads(p.read_text()) for p in corpus_dir.glob("*.json") if p.name != "manifest.json"}
    canonical = sorted(
        name
        for name, info in infos.items()
        if info["outcome"] == "accepted"
        and (info.get("form") or {}).get("format") == "docx"
        and (info.get("form") or {}).get("layout") == "grid"
    )
    assert canonical, "the corpus has canonical .docx submissions"
    load_corpus(imap_server, corpus_dir, canonical)
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        bot.single_pass()
        with bot.store.sessions() as session:
            records = {r["message_id"]: r for r in export_records(session)}
    for name in canonical:
        record = records[infos[name]["message_id"]]
        assert record["outcome"] == "accepted", name
        expected = infos[name]["fields"] | ({"prior_grant": None} if "prior_grant" not in infos[name]["fields"] else {})
        # the export also carries the fields the truth does not record (出生年月, 研究方向)
        assert {key: record["fields"].get(key) for key in expected} == expected, name


def _decided(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as connection:
            return int(connection.execute("SELECT count(*) FROM messages WHERE outcome IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_sigkill_mid_run_loses_nothing_and_answers_once(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir)
    config = tmp_path / "mailbot.toml"
    settings = write_config(make_config(tmp_path, imap_server, smtp_sink), config)
    db = settings.data_dir / "mailbot.db"
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "run", "--once"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for threshold in (5, 30):
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while _decided(db) < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]

    violations = invariant_violations(settings, truth, [mail.raw for mail in smtp_sink.received], stops=2)
    assert not violations, "\n".join(violations)
