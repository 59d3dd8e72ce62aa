"""Surviving faults: a cut IMAP connection, a changed UIDVALIDITY, a message delivered twice, SMTP
refusals and resets, the process killed while an answer is on the wire, a full disk.

Each test breaks one thing with real servers (Dovecot or pymap through a TCP proxy, aiosmtpd) and then
checks the two promises: every message gets exactly one record, every applicant exactly one answer.
"""

from __future__ import annotations

import asyncio
import copy
import email
import email.policy
import errno
import imaplib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import IO, Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import func, select, update

import storage.archive
from mailbot.admin.status import status_report
from mailbot.clock import utcnow
from mailbot.config import Settings, parse_settings
from mailbot.demo import write_config
from mailbot.digest.contents import build_digest
from mailbot.embedded import LOOPBACK, SmtpSink, free_port
from mailbot.imap import MailboxClient
from mailbot.runners.drivers import RunSummary, take_in
from mailbot.worker import Worker
from parsers import extract_parts
from storage.models import Delivery, Message, OutboxMail, OutboxState
from tests.conftest import ImapServer, load_corpus, make_config
from tests.support.dovecot import DovecotServer
from tests.support.proxy import TcpProxy

REPO = Path(__file__).resolve().parent.parent
SMP_BOX = "min.gao@aminer.cn"
FAULT_TIMEOUT_S = 60


# --- helpers ----------------------------------------------------------------------------------


def settings_for(tmp_path: Path, raw: dict[str, Any]) -> Settings:
    return parse_settings(raw, str(tmp_path / "test configuration"))


def answers_by_original(raws: list[bytes]) -> Counter[str]:
    return Counter(email.message_from_bytes(raw).get("In-Reply-To", "") for raw in raws)


def records(bot: Worker) -> Counter[str]:
    with bot.store.sessions() as session:
        return Counter(str(m.message_key) for m in session.scalars(select(Message)))


def outbox_rows(bot: Worker) -> list[OutboxMail]:
    with bot.store.sessions() as session:
        return list(session.scalars(select(OutboxMail).order_by(OutboxMail.id)))


def make_due_now(bot: Worker) -> None:
    """Skip the retry delay instead of sleeping through it."""
    with bot.store.sessions() as session, session.begin():
        session.execute(update(OutboxMail).values(next_attempt_at=utcnow()))


def ids_of(truth: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(info["message_id"] for info in truth.values())


def large_submission(corpus_dir: Path, extra_bytes: int) -> tuple[bytes, str]:
    """A readable smp form with a photo of ``extra_bytes`` beside it (random, so it does not compress)."""
    source = (corpus_dir / "smp-014.eml").read_bytes()
    form, data = next((a, d) for a, d in extract_parts(source) if a.filename.endswith(".docx"))
    message_id = "<large-submission-1@sufe.edu.cn>"
    mail = EmailMessage()
    mail["From"] = "李建华 <jianhuali@sufe.edu.cn>"
    mail["To"] = SMP_BOX
    mail["Subject"] = "SMP基金申报材料（含照片）"
    mail["Message-ID"] = message_id
    mail["Date"] = format_datetime(datetime.fromisoformat("2024-08-22T09:00:00+08:00"))
    mail.set_content("高老师好，申报表和照片见附件。")
    mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=form.filename)
    mail.add_attachment(os.urandom(extra_bytes), maintype="image", subtype="jpeg", filename="photo.jpg")
    return mail.as_bytes(), message_id


@pytest.fixture
def proxied(imap_server: ImapServer) -> Iterator[TcpProxy]:
    with TcpProxy((imap_server.host, imap_server.port)) as proxy:
        yield proxy


# --- IMAP -------------------------------------------------------------------------------------


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_connection_cut_in_the_middle_of_a_large_fetch(
    tmp_path: Path,
    imap_server: ImapServer,
    proxied: TcpProxy,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    database_url: str,
) -> None:
    large, large_id = large_submission(corpus_dir, 5 * 1024 * 1024)
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    imap_server.append(SMP_BOX, large, datetime.fromisoformat("2024-08-22T09:00:00+08:00"))
    truth |= load_corpus(imap_server, corpus_dir, ["smp-008"])
    raw = make_config(tmp_path, imap_server, smtp_sink, database_url, mailbox={"port": proxied.port, "batch_size": 1})
    settings = settings_for(tmp_path, raw)

    proxied.cut_after_server_bytes(1024 * 1024)
    with Worker(settings) as bot:
        first = bot.single_pass()
        assert records(bot) == Counter([truth["smp-002"]["message_id"]]), "what came before the cut is kept"
    assert proxied.cuts >= 1
    assert len(first.errors) == 1 and "smp" in first.errors[0], first.errors
    assert "NOW FAILING" in status_report(settings)

    proxied.cut_after_server_bytes(None)
    with Worker(settings) as bot:
        second = bot.single_pass()
        assert second.errors == []
        assert records(bot) == Counter([*ids_of(truth), large_id])
    assert "NOW FAILING" not in status_report(settings)
    answers = answers_by_original([m.raw for m in smtp_sink.received])
    assert answers == Counter([*ids_of(truth), large_id])


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_imap_server_stalling_then_cutting_every_connection(
    tmp_path: Path, imap_server: ImapServer, proxied: TcpProxy, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    raw = make_config(tmp_path, imap_server, smtp_sink, mailbox={"port": proxied.port})
    settings = settings_for(tmp_path, raw)
    with Worker(settings, inline=True) as bot:
        box = settings.mailbox_by_name("smp")
        # a server that stops answering and then drops the connection: the poll fails, nothing is half-done
        proxied.stall(30)
        cutter = threading.Timer(1.0, proxied.cut_all)
        cutter.start()
        with pytest.raises(Exception):  # noqa: B017 - any failure will do; what matters is what is left
            bot.intake[box.name].poll_now()
        cutter.join()
        proxied.stall(0)
        proxied.refuse(True)
        with pytest.raises(Exception, match="mailbox smp"):
            bot.intake[box.name].poll_now()
        proxied.refuse(False)
        summary = bot.single_pass()
        assert summary.errors == []
        assert records(bot) == Counter(ids_of(truth))
    assert answers_by_original([m.raw for m in smtp_sink.received]) == Counter(ids_of(truth))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_uidvalidity_change_processes_nothing_twice(
    tmp_path: Path, dovecot: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, database_url: str
) -> None:
    truth = load_corpus(dovecot, corpus_dir, ["smp-002", "smp-008"])
    settings = settings_for(tmp_path, make_config(tmp_path, dovecot, smtp_sink, database_url))
    with Worker(settings, inline=True) as bot:
        assert bot.single_pass().errors == []
        old_validity = bot.store.intake.cursor("smp", "INBOX")[0]

    assert isinstance(dovecot.server, DovecotServer)
    dovecot.server.reset_uidvalidity(SMP_BOX)
    truth |= load_corpus(dovecot, corpus_dir, ["smp-012"])

    with Worker(settings, inline=True) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        (smp,) = [p for p in summary.polled if p.mailbox == "smp"]
        assert smp.uidvalidity_changed and (smp.new, smp.known) == (1, 2)
        assert bot.store.intake.cursor("smp", "INBOX")[0] != old_validity
        assert records(bot) == Counter(ids_of(truth))
        assert len(summary.processed) == 1
    assert answers_by_original([m.raw for m in smtp_sink.received]) == Counter(ids_of(truth))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_one_message_delivered_three_times_is_recorded_and_answered_once(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, database_url: str
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    info = truth["smp-002"]
    raw_message = (corpus_dir / "smp-002.eml").read_bytes()
    arrival = datetime.fromisoformat(info["arrival"])
    imap_server.append(SMP_BOX, raw_message, arrival)  # a second UID in INBOX
    imap_server.append(SMP_BOX, raw_message, arrival, folder="Filed")  # and a copy in another watched folder

    raw = make_config(tmp_path, imap_server, smtp_sink, database_url)
    filed = copy.deepcopy(next(box for box in raw["mailbox"] if box["name"] == "smp"))
    filed.update(name="smp-filed", folder="Filed")
    raw["mailbox"].append(filed)
    settings = settings_for(tmp_path, raw)
    with Worker(settings, inline=True) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        assert records(bot) == Counter([info["message_id"]])
        with bot.store.sessions() as session:
            deliveries = session.scalar(select(func.count()).select_from(Delivery))
        assert deliveries == 3
        again = bot.single_pass()
        assert again.processed == [] and again.sent == []
    assert answers_by_original([m.raw for m in smtp_sink.received]) == Counter([info["message_id"]])


# --- SMTP -------------------------------------------------------------------------------------

RESET = "reset"  # a scripted reply: drop the connection without answering


@dataclass
class ScriptedHandler:
    """Answers the next RCPT and DATA commands from a script, then accepts; keeps what it accepted."""

    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)
    attempts: int = 0

    async def handle_RCPT(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        reply = self.data_replies.pop(0) if self.data_replies else "250 accepted"
        if reply == RESET:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # the reply never leaves: nothing was accepted
            return "421 not sent"
        if reply.startswith("250"):
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            self.accepted.append(content)
        return reply


class ScriptedSink:
    def __init__(self, handler: Any, port: int | None = None) -> None:
        self.handler = handler
        self.host = LOOPBACK
        self.port = port or free_port()
        self._controller = Controller(handler, hostname=LOOPBACK, port=self.port, decode_data=False)

    def __enter__(self) -> ScriptedSink:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


def provider_files_sent_mail(tmp_path: Path, imap: ImapServer, sink: Any, database_url: str | None) -> dict[str, Any]:
    """The configuration for a provider that files submitted mail in Sent itself (Gmail, Microsoft 365)."""
    raw = make_config(tmp_path, imap, sink, database_url)
    raw["smtp"]["saves_to_sent"] = True
    return raw


def smtp_settings(tmp_path: Path, imap: ImapServer, sink: Any, database_url: str | None = None) -> Settings:
    return settings_for(tmp_path, provider_files_sent_mail(tmp_path, imap, sink, database_url))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_temporary_refusals_are_retried_until_one_answer_is_accepted(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, database_url: str
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    handler = ScriptedHandler(
        rcpt_replies=["452 4.5.3 Too many recipients this hour"],
        data_replies=["421 4.3.2 Service shutting down", "451 4.3.0 Local error, try again"],
    )
    with ScriptedSink(handler) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink, database_url)
        with Worker(settings, inline=True) as bot:
            summary = bot.single_pass()
            replies = [result.reply for result in summary.sent]
            for _ in range(3):
                make_due_now(bot)
                replies.extend(result.reply for result in bot.send())
            make_due_now(bot)
            assert bot.send() == []
            (row,) = outbox_rows(bot)
    assert "452" in replies[0] and "421" in replies[1] and "451" in replies[2] and replies[3] == "250 accepted"
    assert row.state == OutboxState.SENT and row.attempts == 4
    assert answers_by_original(handler.accepted) == Counter(ids_of(truth))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_permanent_refusal_fails_at_once_and_shows_in_status(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, database_url: str
) -> None:
    load_corpus(imap_server, corpus_dir, ["smp-002"])
    handler = ScriptedHandler(data_replies=["550 5.7.1 Message rejected as spam"])
    with ScriptedSink(handler) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink, database_url)
        with Worker(settings, inline=True) as bot:
            (result,) = bot.single_pass().sent
            make_due_now(bot)
            assert bot.send() == []
            (row,) = outbox_rows(bot)
    assert result.state == OutboxState.FAILED and "550" in result.reply
    assert row.state == OutboxState.FAILED and row.attempts == 1
    assert handler.accepted == [] and handler.attempts == 1
    report = status_report(settings)
    assert "0 sent, 1 failed" in report
    assert f"not delivered: {row.message_id} to x.yu@sdu.edu.cn: 550 5.7.1 Message rejected as spam" in report


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_connection_reset_before_the_reply_is_sent_again_once(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, database_url: str
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    handler = ScriptedHandler(data_replies=[RESET])
    with ScriptedSink(handler) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink, database_url)
        with Worker(settings, inline=True) as bot:
            first = bot.single_pass().sent
            make_due_now(bot)
            second = bot.send()
            assert {row.state for row in outbox_rows(bot)} == {OutboxState.SENT}
    assert [r.state for r in first].count(OutboxState.PENDING) == 1
    assert len(second) == 1 and second[0].state == OutboxState.SENT
    assert answers_by_original(handler.accepted) == Counter(ids_of(truth))


@dataclass
class FilingThenResetHandler:
    """A provider that accepted the first message and filed it in Sent, but whose reply was lost."""

    imap: ImapServer
    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(content)
        if len(self.received) == 1:
            sender = str(envelope.mail_from)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.imap.append(sender, content, utcnow(), folder="Sent")
            )
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
        return "250 accepted"


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_lost_reply_after_the_provider_filed_the_answer_is_not_sent_again(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, database_url: str
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    handler = FilingThenResetHandler(imap_server)
    with ScriptedSink(handler) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink, database_url)
        with Worker(settings, inline=True) as bot:
            (first,) = bot.single_pass().sent
            assert first.state == OutboxState.PENDING
            make_due_now(bot)
            (second,) = bot.send()
            (row,) = outbox_rows(bot)
    assert answers_by_original(handler.received) == Counter(ids_of(truth)), "the applicant got one answer"
    assert second.state == OutboxState.SENT and row.state == OutboxState.SENT
    assert "found in the Sent folder" in str(row.last_reply)


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_sent_folder_that_cannot_be_searched_holds_the_answer_back(
    tmp_path: Path,
    imap_server: ImapServer,
    corpus_dir: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    handler = ScriptedHandler(data_replies=[RESET])
    with ScriptedSink(handler) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink, database_url)
        with Worker(settings, inline=True) as bot:
            bot.single_pass()
            make_due_now(bot)
            with monkeypatch.context() as patch:

                def connection_lost(*_args: object) -> bool:
                    raise imaplib.IMAP4.abort("socket error: EOF")

                patch.setattr(MailboxClient, "contains_message_id", connection_lost)
                (held,) = bot.send()
            assert held.state == OutboxState.PENDING and "cannot look in Sent" in held.reply
            make_due_now(bot)
            (sent,) = bot.send()
            assert sent.state == OutboxState.SENT
    assert answers_by_original(handler.accepted) == Counter(ids_of(truth))


def decide_and_die_handing_over(bot: Worker) -> None:
    """Fetch and decide the mailbox, then leave its one answer as a worker killed mid-hand-over would."""
    take_in(bot.runners, RunSummary())
    bot.deciding.decide()
    (claimed,) = bot.store.to_send.claim("a worker that then died", 1)
    with bot.store.sessions() as session, session.begin():
        session.get_one(OutboxMail, claimed).state = OutboxState.COMMITTING


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_recovery_waits_while_the_sent_folder_cannot_be_searched(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    handler = ScriptedHandler()
    with ScriptedSink(handler) as sink:
        settings = parse_settings(provider_files_sent_mail(tmp_path, imap_server, sink, None), "provider")
        with Worker(settings, inline=True) as bot:
            # a worker died while the end of the answer was on its way: only the Sent folder can tell
            decide_and_die_handing_over(bot)
            with monkeypatch.context() as patch:

                def connection_lost(*_args: object) -> bool:
                    raise imaplib.IMAP4.abort("socket error: EOF")

                patch.setattr(MailboxClient, "contains_message_id", connection_lost)
                assert bot.send() == []
                (row,) = outbox_rows(bot)
                assert row.state == OutboxState.COMMITTING, "left for a later look, never sent blindly"
            (sent,) = bot.send()
            assert sent.state == OutboxState.SENT
    assert answers_by_original(handler.accepted) == Counter(ids_of(truth))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_an_interrupted_hand_over_nothing_can_check_is_presumed_delivered_and_told_to_coordinators(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    load_corpus(imap_server, corpus_dir, ["smp-002"])
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink))
    assert not settings.smtp.saves_to_sent, "the provider files nothing: no Sent folder can tell"
    with Worker(settings, inline=True) as bot:
        # a worker died between recording the hand-over and writing the end of the answer
        decide_and_die_handing_over(bot)
        assert bot.send() == []
        (row,) = outbox_rows(bot)
        assert (row.state, row.filed_in_sent) == (OutboxState.SENT, False), "never sent a second time"
        assert row.last_reply is not None and row.last_reply.startswith("presumed delivered")
        with bot.store.sessions() as session:
            call = settings.call_by_id("smp-zhipu-2024")
            now = utcnow()
            digest = build_digest(session, settings, call, now.astimezone(call.tz).date(), now)
    assert smtp_sink.received == []
    (problem,) = digest.ack_problems
    assert (problem.problem, problem.new) == ("uncertain", True)
    assert problem.reference is not None and problem.reference.startswith("SMP")


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_smtp_server_down_then_back(tmp_path: Path, imap_server: ImapServer, corpus_dir: Path) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    port = free_port()
    with ScriptedSink(ScriptedHandler(), port) as sink:
        settings = smtp_settings(tmp_path, imap_server, sink)
    with Worker(settings, inline=True) as bot:
        down = bot.single_pass().sent  # nothing listens on the port now
        assert [r.state for r in down] == [OutboxState.PENDING, OutboxState.PENDING]
        assert "Connection refused" in down[0].reply or "Errno" in down[0].reply
        back = ScriptedHandler()
        with ScriptedSink(back, port):
            make_due_now(bot)
            assert {r.state for r in bot.send()} == {OutboxState.SENT}
            make_due_now(bot)
            assert bot.send() == []
    assert answers_by_original(back.accepted) == Counter(ids_of(truth))


# --- killed while sending ---------------------------------------------------------------------


@dataclass
class HangingHandler:
    """A provider that files submitted mail in the sender's Sent folder (Gmail, Microsoft 365, Coremail)
    and then never answers; or one that hangs before the message is complete."""

    imap: ImapServer
    hang_in: str  # "DATA" (after filing in Sent) or "RCPT"
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    received: list[bytes] = field(default_factory=list)

    async def _hang(self) -> None:
        self.reached.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)

    async def handle_RCPT(
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.hang_in == "RCPT":
            await self._hang()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(content)
        sender = str(envelope.mail_from)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.imap.append(sender, content, utcnow(), folder="Sent")
        )
        await self._hang()
        return "250 accepted"


def _run_once_and_kill_when(config: Path, reached: threading.Event) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "run", "--once"]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        if not reached.wait(40):
            process.kill()
            _, err = process.communicate(timeout=10)
            pytest.fail(f"the bot never reached the SMTP server:\n{err.decode(errors='replace')[-3000:]}")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _restart_after_kill(bot: Worker) -> None:
    """A restarted single worker sees the row as interrupted at once; on PostgreSQL only once it is stale."""
    with bot.store.sessions() as session, session.begin():
        session.execute(
            update(OutboxMail)
            .where(OutboxMail.state.in_([OutboxState.SENDING, OutboxState.COMMITTING]))
            .values(sending_since=utcnow() - timedelta(hours=1))
        )


@pytest.mark.timeout(FAULT_TIMEOUT_S)
@pytest.mark.parametrize("hang_in", ["DATA", "RCPT"])
def test_killed_while_the_answer_is_on_the_wire_answers_exactly_once(
    tmp_path: Path,
    imap_server: ImapServer,
    corpus_dir: Path,
    database_url: str,
    hang_in: str,
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002"])
    original = truth["smp-002"]["message_id"]
    config = tmp_path / "mailbot.toml"
    hanging = HangingHandler(imap_server, hang_in)
    with ScriptedSink(hanging) as sink:
        write_config(provider_files_sent_mail(tmp_path, imap_server, sink, database_url), config)
        try:
            _run_once_and_kill_when(config, hanging.reached)
        finally:
            hanging.release.set()

    with SmtpSink() as normal:
        settings = write_config(provider_files_sent_mail(tmp_path, imap_server, normal, database_url), config)
        with Worker(settings, inline=True) as bot:
            (row,) = outbox_rows(bot)
            # killed after the end of the message left (DATA) or before it did (RCPT)
            assert row.state == (OutboxState.COMMITTING if hang_in == "DATA" else OutboxState.SENDING)
            _restart_after_kill(bot)
            summary = bot.single_pass()
            assert summary.errors == []
            (row,) = outbox_rows(bot)
        delivered = [m.raw for m in normal.received]
    everything = answers_by_original([*hanging.received, *delivered])
    assert everything == Counter([original]), "the applicant got exactly one answer"
    assert row.state == OutboxState.SENT
    if hang_in == "DATA":
        assert delivered == [] and row.last_reply == "found in the Sent folder after an interruption"
        assert imap_server.message_ids(SMP_BOX, "Sent") == [row.message_id]
    else:
        assert hanging.received == [] and len(delivered) == 1
        assert row.attempts == 2


# --- disk full --------------------------------------------------------------------------------


class _FullDiskFile:
    """A file that takes half of what is written and then reports the disk full."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _OsWithFullDisk:
    """``os`` as ``storage.archive`` sees it, except that files it opens for writing fill up."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fdopen(fd: int, mode: str = "rb", *args: Any) -> _FullDiskFile:
        return _FullDiskFile(os.fdopen(fd, mode, *args))


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_disk_full_while_archiving_records_nothing_and_recovers(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink))
    with Worker(settings, inline=True) as bot:
        with monkeypatch.context() as patch:
            patch.setattr(storage.archive, "os", _OsWithFullDisk())
            full = bot.single_pass()
        assert len(full.errors) == 1 and "No space left on device" in full.errors[0], full.errors
        assert records(bot) == Counter()
        assert [p for p in settings.archive_dir.rglob("*") if p.is_file()] == [], "no temporary file is left"
        assert "NOW FAILING" in status_report(settings)

        again = bot.single_pass()
        assert again.errors == []
        assert records(bot) == Counter(ids_of(truth))
    assert answers_by_original([m.raw for m in smtp_sink.received]) == Counter(ids_of(truth))
