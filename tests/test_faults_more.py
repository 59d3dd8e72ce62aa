"""Surviving more faults: the IMAP server restarted in the middle of a batch, a login refused for a
while, PostgreSQL restarted in the middle of a batch, the SQLite file locked by another process.

Each test breaks one thing with real servers and then checks the promises against the database,
the archive and the mail the SMTP server accepted (``tests/support/invariants.py``): every message
exactly one record with its true outcome, every answerable message exactly one answer.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import ColumnElement, Engine, Update, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import ORMExecuteState, Session

from mailbot.admin.status import status_report
from mailbot.clock import utcnow
from mailbot.config import Settings, parse_settings
from mailbot.demo import write_config
from mailbot.embedded import LOOPBACK, SmtpSink, free_port
from mailbot.runners.drivers import RunSummary, take_in
from mailbot.sender import Sender
from mailbot.worker import Worker
from parsers import extract_parts
from storage import Storage
from storage.intake_records import Recorded
from storage.models import Message, MessageState, OutboxMail, OutboxState
from tests.conftest import PASSWORD, PASSWORD_ENV, ImapServer, corpus_truth, load_corpus, make_config
from tests.support.dovecot import DovecotServer
from tests.support.invariants import ANSWERED_OUTCOMES, answers_by_original, invariant_violations
from tests.support.proxy import TcpProxy

REPO = Path(__file__).resolve().parent.parent
SMP_CALL = "smp-zhipu-2024"
SMP_USER = "min.gao@aminer.cn"
FAULT_TIMEOUT_S = 60
POLL_S = 0.02


# --- helpers ----------------------------------------------------------------------------------


def first_of_call(corpus_dir: Path, call: str, count: int) -> list[str]:
    """The first ``count`` messages of ``call`` by arrival: their outcomes depend only on each other."""
    truth = corpus_truth(corpus_dir)
    return sorted((n for n in truth if truth[n]["call"] == call), key=lambda n: truth[n]["arrival"])[:count]


def settings_for(tmp_path: Path, raw: dict[str, Any]) -> Settings:
    return parse_settings(raw, str(tmp_path / "test configuration"))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting until {what}")
        time.sleep(POLL_S)


def assert_invariants(settings: Settings, truth: dict[str, dict[str, Any]], sink: SmtpSink) -> None:
    violations = invariant_violations(settings, truth, [mail.raw for mail in sink.received])
    assert not violations, "\n".join(violations)


def smp_status_line(settings: Settings) -> str:
    return next(line for line in status_report(settings).splitlines() if line.strip().startswith("smp "))


# --- IMAP server restarted ----------------------------------------------------------------------


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_imap_server_restarted_in_the_middle_of_a_batch(
    tmp_path: Path,
    dovecot: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = dovecot.server
    assert isinstance(server, DovecotServer)
    names = first_of_call(corpus_dir, SMP_CALL, 6)
    truth = load_corpus(dovecot, corpus_dir, names)
    before_restart = 2
    old_pid = server.process.pid if server.process else None
    restarted = threading.Event()

    with TcpProxy((dovecot.host, dovecot.port)) as proxy:
        raw = make_config(tmp_path, dovecot, smtp_sink, database_url, mailbox={"port": proxy.port, "batch_size": 1})
        settings = settings_for(tmp_path, raw)

        def restart_server() -> None:
            server.restart()
            restarted.set()
            proxy.stall(0)

        with Worker(settings, inline=True) as bot:
            record_many = bot.store.intake.record_many
            recorded: list[Recorded] = []

            def record_then_restart(*args: Any, **kwargs: Any) -> list[Recorded]:
                """After the second message: hold the bot's next FETCH while Dovecot restarts under it."""
                result = record_many(*args, **kwargs)
                recorded.extend(result)
                if len(recorded) == before_restart:
                    proxy.stall(30)
                    threading.Thread(target=restart_server, name="restart-dovecot").start()
                return result

            with monkeypatch.context() as patch:
                patch.setattr(bot.store.intake, "record_many", record_then_restart)
                first = bot.single_pass()

            assert restarted.is_set() and server.process is not None and server.process.pid != old_pid
            assert len(first.errors) == 1 and first.errors[0].startswith("mailbox smp"), first.errors
            assert sorted(p.message_key for p in first.processed) == sorted(
                truth[name]["message_id"] for name in names[:before_restart]
            ), "what was fetched before the restart is decided in the same run"
            assert "NOW FAILING" in smp_status_line(settings)

            second = bot.single_pass()
            assert second.errors == []
            assert len(second.processed) == len(names) - before_restart
    assert "NOW FAILING" not in smp_status_line(settings)
    assert_invariants(settings, truth, smtp_sink)


# --- IMAP login refused -----------------------------------------------------------------------

# Dovecot delays a refused login and adds a growing penalty per address; without them the test
# sees the bot's own backoff, not the server's
NO_LOGIN_PENALTY = """
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
REFUSAL = "[AUTHENTICATIONFAILED] Authentication failed."
RETRY_LINE = re.compile(r"retrying in (\d+) s$")


def refused_logins(server: DovecotServer, user: str) -> int:
    """Logins Dovecot refused to ``user``, from its own log."""
    return sum(1 for line in server.log_text().splitlines() if "auth failed" in line and f"user=<{user}>" in line)


def mailbot_command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mailbot", "--config", str(config), *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=FAULT_TIMEOUT_S)


@pytest.fixture
def strict_dovecot(dovecot: ImapServer) -> Iterator[ImapServer]:
    assert isinstance(dovecot.server, DovecotServer)
    dovecot.server.extra_config = NO_LOGIN_PENALTY
    dovecot.server.restart()
    yield dovecot


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_login_refused_for_a_while_then_fixed(
    tmp_path: Path,
    strict_dovecot: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = strict_dovecot.server
    assert isinstance(server, DovecotServer)
    names = first_of_call(corpus_dir, SMP_CALL, 4)
    truth = load_corpus(strict_dovecot, corpus_dir, names)
    config = tmp_path / "mailbot.toml"
    settings = write_config(make_config(tmp_path, strict_dovecot, smtp_sink, mailbox={"poll_interval_s": 0.5}), config)
    monkeypatch.setenv(PASSWORD_ENV, "an-old-password")

    once = mailbot_command(config, "run", "--once")
    assert once.returncode != 0
    assert f"error: mailbox smp: the server refused the login as {SMP_USER}" in once.stderr, once.stderr[-2000:]
    status = mailbot_command(config, "status")
    assert status.returncode == 1, status.stderr[-2000:]  # non-zero while a mailbox is failing
    (smp_line,) = [line for line in status.stdout.splitlines() if line.strip().startswith("smp ")]
    assert "NOW FAILING" in smp_line and REFUSAL in smp_line, status.stdout

    caplog.set_level(logging.INFO)
    with Worker(settings, inline=True) as bot:
        loop = threading.Thread(target=bot.run_until_stopped, name="run-forever", daemon=True)
        refused_before = refused_logins(server, SMP_USER)
        started = time.monotonic()
        loop.start()
        try:

            def smp_retry_delays() -> list[int]:
                return [
                    int(found.group(1))
                    for record in caplog.records
                    if getattr(record, "mailbox", None) == "smp"
                    and (found := RETRY_LINE.search(record.getMessage())) is not None
                ]

            wait_until(lambda: len(smp_retry_delays()) >= 3, 20, "the smp intake has failed three times")
            window_s = time.monotonic() - started
            delays = smp_retry_delays()[:3]
            monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
            time.sleep(0.2)  # Dovecot logs a refused login once the connection is closed
            attempts = refused_logins(server, SMP_USER) - refused_before
            assert delays == sorted(set(delays)) and delays[0] >= 1, f"the delays grow: {delays}"
            assert 3 <= attempts <= 4, f"{attempts} logins refused in {window_s:.1f} s: no tight loop"

            answered = sum(1 for name in names if truth[name]["outcome"] not in {"ignored", "correspondence"})
            wait_until(lambda: len(smtp_sink.received) >= answered, 30, "every answer is sent after the fix")
        finally:
            bot.stop()
            loop.join(timeout=30)
        assert not loop.is_alive(), "the loop stops when asked"
    assert "NOW FAILING" not in smp_status_line(settings)
    assert_invariants(settings, truth, smtp_sink)


# --- PostgreSQL restarted ---------------------------------------------------------------------

DATABASE_DOWN_S = 1.5


def count_rows(engine: Engine, table: type[Message] | type[OutboxMail], *where: ColumnElement[bool]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def decided_in_postgres(engine: Engine) -> int:
    try:
        return count_rows(engine, Message, Message.outcome.is_not(None))
    except ProgrammingError:  # the schema is not there yet
        return 0


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_postgres_restarted_in_the_middle_of_a_batch(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, postgres_url: str
) -> None:
    """To its clients a restart is every connection reset at once, and none accepted for a moment.

    PostgreSQL is shared by everything on the machine, so the bot talks to it through a proxy that
    does exactly that, while the test watches the real database directly.
    """
    names = first_of_call(corpus_dir, SMP_CALL, 16)
    truth = load_corpus(imap_server, corpus_dir, names)
    real = make_url(postgres_url)
    observer = create_engine(postgres_url)
    seen: dict[str, int] = {}
    failures: list[BaseException] = []
    try:
        with TcpProxy((real.host or LOOPBACK, real.port or 5432)) as proxy:
            proxied = real.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
            raw = make_config(tmp_path, imap_server, smtp_sink, proxied)
            raw["smtp"]["timeout_s"] = 5  # a conversation the failure interrupts ends within seconds
            settings = settings_for(tmp_path, raw)

            def restart_mid_batch() -> None:
                try:
                    wait_until(lambda: decided_in_postgres(observer) >= 4, 30, "four messages are decided")
                    proxy.refuse(True)
                    seen["connections cut"] = proxy.cut_all()
                    seen["decided at the cut"] = decided_in_postgres(observer)
                    time.sleep(DATABASE_DOWN_S)
                    proxy.refuse(False)
                except BaseException as exc:
                    failures.append(exc)

            restarter = threading.Thread(target=restart_mid_batch, name="restart-postgres")
            with Worker(settings, inline=True) as bot:
                restarter.start()
                with pytest.raises(OperationalError):
                    bot.single_pass()
            restarter.join(timeout=30)
            assert not failures, failures
            assert seen["connections cut"] >= 1 and seen["decided at the cut"] < len(names), seen
            # the run gave back what it had claimed and not finished: nothing waits for a claim to expire
            assert count_rows(observer, Message, Message.state == MessageState.PROCESSING) == 0
            assert count_rows(observer, OutboxMail, OutboxMail.state == OutboxState.SENDING) == 0
            left = len(names) - decided_in_postgres(observer)
            assert left > 0, "the restart stopped the run"

            with Worker(settings, inline=True) as bot:
                settle_answers_handed_over(bot)
                second = bot.single_pass()
            assert second.errors == []
            assert len(second.processed) == left
            assert_invariants(settings, truth, smtp_sink)
    finally:
        observer.dispose()


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_postgres_connections_reset_while_a_decision_is_stored(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, postgres_url: str
) -> None:
    """Every connection reset and new ones accepted at once: a backend restart, a failover, a proxy.

    The reset comes exactly as the fourth decision is being stored, so the decision is lost with
    its connection; the message must then be decided again, not handed to a person.
    """
    names = first_of_call(corpus_dir, SMP_CALL, 8)
    truth = load_corpus(imap_server, corpus_dir, names)
    real = make_url(postgres_url)
    with TcpProxy((real.host or LOOPBACK, real.port or 5432)) as proxy:
        proxied = real.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink, proxied))
        decisions: list[str] = []

        def reset_at_the_fourth_decision(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("UPDATE messages SET") and "outcome=" in statement:
                decisions.append(statement)
                if len(decisions) == 4:
                    proxy.cut_all()

        with Worker(settings, inline=True) as bot:
            event.listen(bot.store.engine, "before_cursor_execute", reset_at_the_fourth_decision)
            try:
                bot.single_pass()
            except OperationalError:
                pass  # failing the run is fine; what matters is what it leaves
            finally:
                event.remove(bot.store.engine, "before_cursor_execute", reset_at_the_fourth_decision)
            assert len(decisions) >= 4, "the reset came while a decision was stored"
            assert bot.single_pass().errors == []
        assert_invariants(settings, truth, smtp_sink)


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_long_running_bot_rides_out_a_postgres_restart(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, postgres_url: str
) -> None:
    """``run`` without ``--once`` keeps going through a restart and takes up the mail that came meanwhile."""
    names = first_of_call(corpus_dir, SMP_CALL, 8)
    early, late = names[:4], names[4:]
    truth = load_corpus(imap_server, corpus_dir, early)
    real = make_url(postgres_url)
    with TcpProxy((real.host or LOOPBACK, real.port or 5432)) as proxy:
        proxied = real.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        raw = make_config(tmp_path, imap_server, smtp_sink, proxied, mailbox={"poll_interval_s": 0.5})
        settings = settings_for(tmp_path, raw)

        def answered(among: dict[str, dict[str, Any]]) -> Callable[[], bool]:
            wanted = {info["message_id"] for info in among.values() if info["outcome"] in ANSWERED_OUTCOMES}
            return lambda: wanted <= set(answers_by_original(mail.raw for mail in smtp_sink.received))

        with Worker(settings, inline=True) as bot:
            loop = threading.Thread(target=bot.run_until_stopped, name="run-forever", daemon=True)
            loop.start()
            try:
                wait_until(answered(truth), 30, "the first messages are answered")
                proxy.refuse(True)
                assert proxy.cut_all() >= 1
                time.sleep(4 * settings.mailbox[0].poll_interval_s)  # every intake loop meets the outage
                proxy.refuse(False)
                truth |= load_corpus(imap_server, corpus_dir, late)
                wait_until(answered(truth), 40, "the mail that came after the restart is answered")
            finally:
                bot.stop()
                loop.join(timeout=30)
            assert not loop.is_alive(), "the loop stops when asked"
        assert_invariants(settings, truth, smtp_sink)


def with_longer_name(corpus_dir: Path, name: str, times: int) -> tuple[bytes, str]:
    """Corpus message ``name`` again, its form's applicant name written ``times`` over, with a new Message-ID."""
    info = corpus_truth(corpus_dir)[name]
    source = (corpus_dir / f"{name}.eml").read_bytes()
    form, package = next((a, d) for a, d in extract_parts(source) if a.filename.endswith(".docx"))
    applicant = str(info["fields"]["applicant_name"]).encode()
    original = zipfile.ZipFile(io.BytesIO(package))
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as target:
        for member in original.infolist():
            data = original.read(member)
            if member.filename == "word/document.xml":
                assert applicant in data, "the form names its applicant"
                data = data.replace(applicant, applicant * times)
            target.writestr(member.filename, data)
    message_id = f"<longer-name-{name}@mailbot.test>"
    mail = EmailMessage()
    mail["From"] = "applicant <applicant@mailbot.test>"
    mail["To"] = info["mailbox"]
    mail["Subject"] = "申报材料"
    mail["Message-ID"] = message_id
    mail["Date"] = format_datetime(datetime.fromisoformat(info["arrival"]))
    mail.set_content("申报表见附件。")
    mail.add_attachment(rewritten.getvalue(), maintype="application", subtype="octet-stream", filename=form.filename)
    return mail.as_bytes(), message_id


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_form_value_too_long_for_its_column_does_not_stop_the_call(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, postgres_url: str
) -> None:
    """Not every database error is the database's: one applicant's overlong name must not stop intake."""
    names = first_of_call(corpus_dir, SMP_CALL, 3)
    # a .docx form of someone none of the delivered messages names: their outcomes stay as the truth says
    crafted, crafted_id = with_longer_name(corpus_dir, "smp-014", 250)
    truth = load_corpus(imap_server, corpus_dir, names[:1])
    imap_server.append(SMP_USER, crafted, datetime.fromisoformat(truth[names[0]]["arrival"]) + timedelta(hours=1))
    truth |= load_corpus(imap_server, corpus_dir, names[1:])
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink, postgres_url))
    with Worker(settings, inline=True) as bot:
        for _ in range(2):  # the second run shows nothing is left waiting
            assert bot.single_pass().errors == []
        with bot.store.sessions() as session:
            crafted_state = session.scalar(select(Message.state).where(Message.message_key == crafted_id))
    assert crafted_state in (MessageState.DONE, MessageState.REVIEW)
    violations = invariant_violations(settings, truth, [mail.raw for mail in smtp_sink.received])
    assert not [line for line in violations if crafted_id not in line], "\n".join(violations)


def settle_answers_handed_over(bot: Worker) -> None:
    """Let a restarted worker look at an answer cut off while its end was handed over, at once.

    Only that state is ambiguous (the server may have the answer), so on PostgreSQL, where other
    workers may be mid-conversation, it is looked at once older than the SMTP timeout thrice.
    """
    with bot.store.sessions() as session, session.begin():
        session.execute(
            update(OutboxMail)
            .where(OutboxMail.state == OutboxState.COMMITTING)
            .values(sending_since=utcnow() - timedelta(hours=1))
        )


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_hand_over_recorded_but_its_confirmation_lost_still_answers_once(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    database_url: str,
) -> None:
    """The database committed "the end goes out now" and then the connection died before saying so.

    The row reads ``committing``, yet the end of the answer never left: the worker knows that,
    and must not let the answer pass for delivered.
    """
    truth = load_corpus(imap_server, corpus_dir, first_of_call(corpus_dir, SMP_CALL, 1))
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink, database_url))
    lost: list[int] = []

    def note_hand_over(execution: ORMExecuteState) -> None:
        statement = execution.statement
        if isinstance(statement, Update) and statement.compile().params.get("state") == OutboxState.COMMITTING:
            assert isinstance(execution.parameters, dict)
            execution.session.info["handed over"] = [execution.parameters["row_id"]]

    def confirmation_lost(session: Session) -> None:
        if session.info.get("handed over") and not lost:
            lost.extend(session.info["handed over"])
            raise OperationalError("COMMIT", {}, ConnectionResetError("the connection was reset"))

    with Worker(settings, inline=True) as bot:
        event.listen(bot.store.sessions, "do_orm_execute", note_hand_over)
        event.listen(bot.store.sessions, "after_commit", confirmation_lost)
        try:
            with pytest.raises(OperationalError):
                bot.single_pass()
        finally:
            event.remove(bot.store.sessions, "do_orm_execute", note_hand_over)
            event.remove(bot.store.sessions, "after_commit", confirmation_lost)
        assert lost, "the hand-over was recorded"
        assert smtp_sink.received == []
        with bot.store.sessions() as session:
            (row,) = session.scalars(select(OutboxMail))
        assert row.state == OutboxState.PENDING, "queued again: its end never went out"
        assert bot.single_pass().errors == []
    assert_invariants(settings, truth, smtp_sink)


# --- another worker takes over a slow batch ---------------------------------------------------


@dataclass
class AnotherWorkerStepsIn:
    """An SMTP server so slow over the first answer that another worker takes the rest for abandoned.

    While it holds the first answer, the rest of the batch has been claimed longer than a worker may
    take over (their clocks are set back), and a second worker settles and sends them.
    """

    settings: Settings
    store: Storage
    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SmtpServer, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(content)
        if len(self.received) == 1:
            await asyncio.get_running_loop().run_in_executor(None, self.second_worker)
        return "250 accepted"

    def second_worker(self) -> None:
        with self.store.sessions() as session, session.begin():
            session.execute(
                update(OutboxMail)
                .where(OutboxMail.state == OutboxState.SENDING)
                .values(sending_since=utcnow() - timedelta(hours=1))
            )
        Sender(self.settings, self.store, "a second worker").flush()


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_a_slow_batch_taken_over_by_another_worker_is_answered_once(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, postgres_url: str
) -> None:
    truth = load_corpus(imap_server, corpus_dir, first_of_call(corpus_dir, SMP_CALL, 3))
    port = free_port()
    smtp: Any = SimpleNamespace(host=LOOPBACK, port=port)  # the configuration needs only these
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp, postgres_url))
    with Worker(settings, inline=True) as bot:
        take_in(bot.runners, RunSummary())
        assert len(bot.deciding.decide()) == len(truth)
        handler = AnotherWorkerStepsIn(settings, bot.store)
        controller = Controller(handler, hostname=LOOPBACK, port=port, decode_data=False)
        controller.start()
        try:
            first = Sender(settings, bot.store, "a slow worker").flush()
        finally:
            controller.stop()
    violations = invariant_violations(settings, truth, handler.received)
    assert not violations, "\n".join(violations)
    assert [result.state for result in first] == [OutboxState.SENT], "the slow worker sent only its first"


# --- SQLite locked by another process ---------------------------------------------------------

LOCK_HELD_S = 3.0
HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
print("released", flush=True)
"""


def decided_in(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return int(connection.execute("SELECT count(*) FROM messages WHERE outcome IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.timeout(FAULT_TIMEOUT_S)
def test_sqlite_locked_by_another_process_for_a_while(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    names = first_of_call(corpus_dir, SMP_CALL, 20)
    truth = load_corpus(imap_server, corpus_dir, names)
    settings = settings_for(tmp_path, make_config(tmp_path, imap_server, smtp_sink))
    db = settings.data_dir / "mailbot.db"
    seen: dict[str, int] = {}
    failures: list[BaseException] = []

    def lock_mid_run() -> None:
        try:
            wait_until(lambda: decided_in(db) >= 3, 30, "the bot has decided three messages")
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD_LOCK, str(db), str(LOCK_HELD_S)], stdout=subprocess.PIPE, text=True
            )
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            seen["at lock"] = decided_in(db)
            assert holder.stdout.readline().strip() == "released"
            seen["at release"] = decided_in(db)
            holder.wait(timeout=10)
        except BaseException as exc:
            failures.append(exc)

    locker = threading.Thread(target=lock_mid_run, name="lock-sqlite")
    with Worker(settings, inline=True) as bot:
        locker.start()
        started = time.monotonic()
        summary = bot.single_pass()
        took = time.monotonic() - started
    locker.join(timeout=30)
    assert not failures, failures
    assert summary.errors == []
    assert seen["at lock"] < len(names), "the lock came while there was work left"
    assert seen["at release"] == seen["at lock"], "nothing was written while the lock was held"
    assert took >= LOCK_HELD_S, "the bot waited for the lock"
    assert_invariants(settings, truth, smtp_sink)
