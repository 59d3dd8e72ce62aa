"""Surviving more faults: the IMAP server restarted in the middle of a batch, a login refused for a
while, PostgreSQL restarted in the middle of a batch, the SQLite file locked by another process.

Each test breaks one thing with real servers and then checks the promises against the database,
the archive and the mail the SMTP server accepted (``tests/support/invariants.py``): every message
exactly one record with its true outcome, every answerable message exactly one answer.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbot.app import Bot
from mailbot.config import Settings, parse_settings
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.ops import status_report
from storage.store import Recorded
from tests.conftest import PASSWORD, PASSWORD_ENV, ImapServer, corpus_truth, load_corpus, make_config
from tests.support.dovecot import DovecotServer
from tests.support.invariants import invariant_violations
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

        with Bot(settings, inline=True) as bot:
            record = bot.store.record
            recorded: list[Recorded] = []

            def record_then_restart(*args: Any, **kwargs: Any) -> Recorded:
                """After the second message: hold the bot's next FETCH while Dovecot restarts under it."""
                result = record(*args, **kwargs)
                recorded.append(result)
                if len(recorded) == before_restart:
                    proxy.stall(30)
                    threading.Thread(target=restart_server, name="restart-dovecot").start()
                return result

            with monkeypatch.context() as patch:
                patch.setattr(bot.store, "record", record_then_restart)
                first = bot.run_once()

            assert restarted.is_set() and server.process is not None and server.process.pid != old_pid
            assert len(first.errors) == 1 and first.errors[0].startswith("mailbox smp"), first.errors
            assert sorted(p.message_key for p in first.processed) == sorted(
                truth[name]["message_id"] for name in names[:before_restart]
            ), "what was fetched before the restart is decided in the same run"
            assert "NOW FAILING" in smp_status_line(settings)

            second = bot.run_once()
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
    assert status.returncode == 0, status.stderr[-2000:]
    (smp_line,) = [line for line in status.stdout.splitlines() if line.strip().startswith("smp ")]
    assert "NOW FAILING" in smp_line and REFUSAL in smp_line, status.stdout

    caplog.set_level(logging.INFO)
    with Bot(settings, inline=True) as bot:
        loop = threading.Thread(target=bot.run_forever, name="run-forever", daemon=True)
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
    with Bot(settings, inline=True) as bot:
        locker.start()
        started = time.monotonic()
        summary = bot.run_once()
        took = time.monotonic() - started
    locker.join(timeout=30)
    assert not failures, failures
    assert summary.errors == []
    assert seen["at lock"] < len(names), "the lock came while there was work left"
    assert seen["at release"] == seen["at lock"], "nothing was written while the lock was held"
    assert took >= LOCK_HELD_S, "the bot waited for the lock"
    assert_invariants(settings, truth, smtp_sink)
