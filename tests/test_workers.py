"""Several workers on one PostgreSQL database: mailbox leases, unique references, a worker killed mid-run."""

from __future__ import annotations

import email
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import Engine, create_engine, select, text

from mailbot.coordination import MailboxLease
from mailbot.decision import ANSWERED
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.runners.drivers import RunSummary, take_in
from mailbot.worker import Worker
from parsers import read_message
from storage import Storage
from storage.archive import RawArchive
from storage.db import make_engine, schema_status, transaction, upgrade
from storage.decisions import lock_call, next_reference_number
from storage.models import Message, MessageState
from tests.conftest import ImapServer, corpus_truth, load_corpus, make_config, make_settings

REPO = Path(__file__).resolve().parent.parent
ANSWERED_OUTCOMES = frozenset(outcome.value for outcome in ANSWERED)
LEASE_LINE = "holding the lease of mailbox "
TERMINATED_WITHIN_S = 10.0


# --- the checks, kept apart so they can be shown to catch what they look for ---------------------


def record_problems(message_keys: list[str], delivered: list[str]) -> list[str]:
    """Every delivered message has exactly one record, and nothing else has one."""
    counts = Counter(message_keys)
    problems = [f"{key}: {count} records" for key, count in sorted(counts.items()) if count > 1]
    problems += [f"{key}: no record" for key in sorted(set(delivered) - set(counts))]
    problems += [f"{key}: recorded but never delivered" for key in sorted(set(counts) - set(delivered))]
    return problems


def acknowledgement_problems(outcomes: dict[str, str | None], replies_to: list[str]) -> list[str]:
    """One acknowledgement for each answered outcome, none for the rest, none for unknown mail."""
    answers = Counter(replies_to)
    problems = []
    for message_id, outcome in sorted(outcomes.items()):
        if outcome is None:
            problems.append(f"{message_id}: no outcome")
            continue
        expected = 1 if outcome in ANSWERED_OUTCOMES else 0
        if answers[message_id] != expected:
            problems.append(f"{message_id} ({outcome}): {answers[message_id]} acknowledgement(s), expected {expected}")
    problems += [f"{message_id}: answered, but no such message" for message_id in sorted(answers.keys() - outcomes)]
    return problems


def reference_problems(references: list[str | None]) -> list[str]:
    counts = Counter(reference for reference in references if reference)
    return [f"reference {reference} given {count} times" for reference, count in sorted(counts.items()) if count > 1]


def test_the_checks_catch_violations() -> None:
    assert record_problems(["<a>", "<b>"], ["<a>", "<b>"]) == []
    assert record_problems(["<a>", "<a>", "<c>"], ["<a>", "<b>"]) == [
        "<a>: 2 records",
        "<b>: no record",
        "<c>: recorded but never delivered",
    ]
    outcomes: dict[str, str | None] = {"<a>": "accepted", "<b>": "ignored", "<c>": "late", "<d>": None}
    assert acknowledgement_problems({"<a>": "accepted", "<b>": "ignored"}, ["<a>"]) == []
    assert acknowledgement_problems(outcomes, ["<a>", "<a>", "<b>", "<x>"]) == [
        "<a> (accepted): 2 acknowledgement(s), expected 1",
        "<b> (ignored): 1 acknowledgement(s), expected 0",
        "<c> (late): 0 acknowledgement(s), expected 1",
        "<d>: no outcome",
        "<x>: answered, but no such message",
    ]
    assert reference_problems(["SMP-0001", None, "SMP-0002", None]) == []
    assert reference_problems(["SMP-0001", "SMP-0002", "SMP-0001"]) == ["reference SMP-0001 given 2 times"]


# --- leases and references ---------------------------------------------------------------------


@pytest.fixture
def engines(postgres_url: str) -> Iterator[list[Engine]]:
    """One engine per simulated worker, each with its own connections, as separate machines have."""
    made = [make_engine(postgres_url) for _ in range(3)]
    upgrade(made[0])
    yield made
    for engine in made:
        engine.dispose()


def _terminate_lease_sessions(engine: Engine) -> int:
    """End every database session that holds a mailbox lease, as the death of its machine would."""
    with engine.connect() as connection:
        ended = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND classid = hashtext('mailbot-mailbox')::oid"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).all()
    return len(ended)


def _acquire_within(lease: MailboxLease, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lease.try_acquire():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.postgres
def test_one_lease_holder_per_mailbox_and_takeover_when_it_dies(engines: list[Engine]) -> None:
    first, second, observer = engines
    lease = MailboxLease(first, "smp")
    rival = MailboxLease(second, "smp")
    other_mailbox = MailboxLease(second, "caai")

    assert lease.try_acquire() and lease.held()
    assert lease.try_acquire(), "asking again while holding keeps the lease"
    assert not rival.try_acquire() and not rival.held()
    assert other_mailbox.try_acquire(), "leases of different mailboxes are independent"

    lease.release()
    assert not lease.held()
    assert rival.try_acquire()
    assert not lease.try_acquire()

    # the holder's connection dies (its machine is gone): the lock goes with it
    assert _terminate_lease_sessions(observer) == 2
    assert not rival.held()
    assert _acquire_within(lease, 5.0), "a waiting worker takes over a dead holder's mailbox"
    assert not rival.try_acquire()
    for held in (lease, rival, other_mailbox):
        held.release()


def test_on_sqlite_the_only_process_always_holds_the_lease(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailbot.db'}")
    leases = [MailboxLease(engine, "smp"), MailboxLease(engine, "smp")]
    assert all(lease.try_acquire() and lease.held() for lease in leases)
    engine.dispose()


@pytest.mark.postgres
def test_reference_numbers_stay_unique_when_workers_decide_at_once(tmp_path: Path, engines: list[Engine]) -> None:
    stores = [Storage(engine, RawArchive(tmp_path / "archive")) for engine in engines]
    per_worker, calls = 12, ("smp-zhipu-2024", "caai-ant-2024")
    start = threading.Barrier(len(stores) * len(calls))
    numbers: dict[str, list[int]] = {call: [] for call in calls}
    errors: list[BaseException] = []

    def decide_repeatedly(store: Storage, call_id: str) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(per_worker):
                with transaction(store.sessions) as session:
                    lock_call(session, call_id)
                    number = next_reference_number(session, call_id)
                    time.sleep(0.002)  # a decision takes a while: give a rival the chance to interleave
                numbers[call_id].append(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=decide_repeatedly, args=(store, call_id)) for store in stores for call_id in calls
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for call_id in calls:
        assert sorted(numbers[call_id]) == list(range(1, per_worker * len(stores) + 1)), call_id


@pytest.mark.postgres
def test_workers_starting_together_on_an_empty_database_migrate_it_once(postgres_url: str) -> None:
    engines = [make_engine(postgres_url) for _ in range(3)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start_worker(engine: Engine) -> None:
        try:
            start.wait(timeout=10)
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_worker, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    current, newest = schema_status(engines[0])
    assert current == newest
    for engine in engines:
        engine.dispose()


# --- three real workers, one killed mid-run ----------------------------------------------------


class Workers:
    """``mailbot run`` processes started by this test, each with its own log file."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.processes)}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "mailbot", "--config", str(self.config), "run"],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the parser pool goes with its worker
        )
        self.processes.append(process)
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process)
        return (self.log_dir / f"worker-{index}.log").read_text(encoding="utf-8", errors="replace")

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> dict[int, int]:
        """SIGTERM to every running worker; their exit codes once they stopped."""
        running = self.running()
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        return {process.pid: process.wait(timeout=60) for process in running}

    def close(self) -> None:
        for process in self.running():
            self.kill(process)
        for log in self._logs:
            log.close()


def worker_id(process: subprocess.Popen[bytes]) -> str:
    """The name a worker records its claims under (``mailbot.worker.worker_name``)."""
    return f"{socket.gethostname()}:{process.pid}"


def leases_in(log: str) -> set[str]:
    return {line.split(LEASE_LINE, 1)[1].split(":", 1)[0] for line in log.splitlines() if LEASE_LINE in line}


def _wait_for(condition: Any, seconds: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(workers.log_of(p)[-3000:] for p in workers.processes)
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.02)


def _progress(db: Engine, worker: str) -> tuple[int, int, int]:
    """(messages decided, messages ``worker`` has claimed, outbox rows ``worker`` is sending)."""
    with db.connect() as connection:
        row = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM messages WHERE outcome IS NOT NULL),"
                " (SELECT count(*) FROM messages WHERE state = 'processing' AND claimed_by = :w),"
                " (SELECT count(*) FROM outbox WHERE state = 'sending' AND claimed_by = :w)"
            ),
            {"w": worker},
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _all_settled(db: Engine, expected: int) -> bool:
    with db.connect() as connection:
        decided, open_outbox = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM messages WHERE state IN ('done', 'review')),"
                " (SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending'))"
            )
        ).one()
    return int(decided) >= expected and int(open_outbox) == 0


def kill_test_subset(corpus_dir: Path, size: int) -> list[str]:
    """An evenly spread part of the corpus in arrival order, so both calls and most outcomes are in it."""
    truth = corpus_truth(corpus_dir)
    ordered = sorted(truth, key=lambda name: truth[name]["arrival"])
    step = max(1, len(ordered) // size)
    return ordered[::step][:size]


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_one_killed_mid_run_decide_and_answer_every_message_once(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, postgres_url: str, corpus_dir: Path
) -> None:
    started = time.monotonic()
    names = kill_test_subset(corpus_dir, 25)
    early, late = names[:20], names[20:]
    config = tmp_path / "mailbot.toml"
    raw = make_config(
        tmp_path,
        imap_server,
        smtp_sink,
        postgres_url,
        mailbox={"poll_interval_s": 1, "idle": False},
        # a short parse timeout and margin make a dead worker's claims expire in about half a minute
        processing={"workers": 1, "parse_timeout_s": 3, "claim_margin_s": 20},
    )
    raw["smtp"]["timeout_s"] = 5  # an interrupted send is looked for in Sent after three of these
    write_config(raw, config)
    db = create_engine(postgres_url)
    workers = Workers(config, tmp_path)
    try:
        for _ in range(3):
            workers.start()
        _wait_for(lambda: all("running:" in workers.log_of(p) for p in workers.processes), 60, "three workers", workers)
        truth = load_corpus(imap_server, corpus_dir, early)

        # the victim polls a mailbox and is midway through messages, with no SMTP conversation open:
        # a kill between the server's acceptance and its Sent copy is the sender's own limit, not
        # a coordination question
        def victim_ready() -> subprocess.Popen[bytes] | None:
            for process in workers.running():
                if leases_in(workers.log_of(process)):
                    decided, claimed, sending = _progress(db, worker_id(process))
                    if decided >= 3 and claimed >= 2 and sending == 0:
                        return process
            return None

        victim: subprocess.Popen[bytes] | None = None

        def found() -> bool:
            nonlocal victim
            victim = victim_ready()
            return victim is not None

        _wait_for(found, 90, "a lease holder midway through its messages", workers)
        assert victim is not None
        workers.kill(victim)
        held_by_victim = leases_in(workers.log_of(victim))
        others_before = [leases_in(workers.log_of(p)) for p in workers.running()]
        assert all(not (held & held_by_victim) for held in others_before), "two workers polled one mailbox"
        orphaned = _progress(db, worker_id(victim))[1]
        assert orphaned >= 2, "the killed worker left messages it had claimed"
        killed_at = time.monotonic() - started

        workers.start()  # the machine comes back
        truth |= load_corpus(imap_server, corpus_dir, late)  # mail that only a new lease holder can fetch
        _wait_for(lambda: _all_settled(db, len(names)), 150, "every message decided and answered", workers)
        codes = workers.stop()
        assert set(codes.values()) == {0}, codes
        survivors = [p for p in workers.processes if p is not victim]
        assert held_by_victim <= set().union(*(leases_in(workers.log_of(p)) for p in survivors))

        with db.connect() as connection:
            rows = connection.execute(text("SELECT message_key, outcome, reference FROM messages")).all()
        delivered = [info["message_id"] for info in truth.values()]
        replies_to = [
            str(email.message_from_bytes(mail.raw).get("In-Reply-To", ""))
            for mail in smtp_sink.received
            if email.message_from_bytes(mail.raw).get("In-Reply-To")
        ]
        assert record_problems([row.message_key for row in rows], delivered) == []
        assert acknowledgement_problems({row.message_key: row.outcome for row in rows}, replies_to) == []
        assert reference_problems([row.reference for row in rows]) == []
        elapsed = time.monotonic() - started
        print(f"killed at {killed_at:.1f} s holding {orphaned} claims; all settled and stopped at {elapsed:.1f} s")
    finally:
        workers.close()
        db.dispose()


@pytest.mark.postgres
def test_a_later_message_waits_for_an_earlier_one_another_worker_is_reading(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, postgres_url: str, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-006", "smp-011"])  # a form, then its revision
    settings = make_settings(tmp_path, imap_server, smtp_sink, postgres_url)
    with Worker(settings, inline=True) as first, Worker(settings, inline=True) as second:
        take_in(first.runners, RunSummary())
        (earlier,) = first.store.to_decide.claim("first", 1)

        assert second.pipeline.decide_received() == [], "the revision must not be decided before its original"
        with second.store.sessions() as session:
            waiting = session.scalar(select(Message).where(Message.message_key == truth["smp-011"]["message_id"]))
            assert waiting is not None and waiting.state == MessageState.RECEIVED and waiting.outcome is None

        with first.store.sessions() as session:
            sha = session.get_one(Message, earlier).sha256
        spec = settings.call_by_id("smp-zhipu-2024").form_spec
        first.pipeline.decider.decide_and_store(earlier, read_message(first.store.archive.get(sha), spec))
        (revision,) = second.pipeline.decide_received()
    assert revision.outcome == "revision"
    with second.store.sessions() as session:
        decided = session.scalar(select(Message).where(Message.message_key == truth["smp-011"]["message_id"]))
        assert decided is not None and decided.supersedes_key == truth["smp-006"]["message_id"]
