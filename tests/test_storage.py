"""Storage: the archive is atomic and content-addressed; recording deduplicates; claims are exclusive."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, func, select, text
from sqlalchemy.orm import Session

from parsers.headers import header_facts
from storage import Storage
from storage.answering import AnswerCounts, add_to_outbox, answers_counted
from storage.archive import RawArchive, sha256_hex, write_atomic
from storage.db import defer_durability, make_engine, schema_status, upgrade
from storage.decisions import archived_copy, next_reference_number
from storage.intake_records import DeliveryRef, Incoming
from storage.models import Message, MessageState, OutboxMail, OutboxState

RAW = (
    b"Message-ID: <a1@example.edu.cn>\r\nFrom: =?utf-8?b?5byg5Lyf?= <ZW@Example.edu.cn>\r\nTo: min.gao@aminer.cn\r\n"
    b"Subject: =?gb2312?B?yerH6w==?=\r\n\r\nbody\r\n"
)
WHEN = datetime(2024, 9, 8, 15, 59, 59, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Storage:
    engine = make_engine(database_url)
    upgrade(engine)
    return Storage(engine, RawArchive(tmp_path / "archive"))


def test_archive_is_content_addressed_private_and_atomic(tmp_path: Path) -> None:
    archive = RawArchive(tmp_path / "archive")
    digest = archive.put(RAW)
    path = archive.path_for(digest)
    assert path.read_bytes() == RAW and archive.get(digest) == RAW
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(archive.root.stat().st_mode & 0o777) == "0o700"
    assert archive.put(RAW) == digest  # idempotent


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "x" / "file.eml", b"data")
    assert list((tmp_path / "x").iterdir()) == []


def test_header_facts_decode_names_and_subjects() -> None:
    facts = header_facts(RAW)
    assert facts.message_id == "<a1@example.edu.cn>"
    assert facts.subject == "申请"
    assert facts.from_addr == "zw@example.edu.cn"
    assert facts.recipients == ("min.gao@aminer.cn",)


def test_schema_is_current_after_upgrade(store: Storage) -> None:
    current, head = schema_status(store.engine)
    assert current == head is not None


def test_recording_twice_is_one_message_with_two_deliveries(store: Storage) -> None:
    first = store.intake.record(RAW, WHEN, "smp", "smp-zhipu-2024", "imap", DeliveryRef("smp", "INBOX", 7, 1))
    second = store.intake.record(
        RAW + b"\r\n", WHEN, "smp", "smp-zhipu-2024", "imap", DeliveryRef("smp", "INBOX", 7, 2)
    )
    assert first.new and not second.new and first.message_pk == second.message_pk
    assert len(store.intake.deliveries_of(first.message_pk)) == 2
    assert store.intake.cursor("smp", "INBOX") == (None, 0), "only intake, knowing the whole batch, moves the cursor"
    with store.sessions() as session:
        message = session.get_one(Message, first.message_pk)
        assert message.arrival == WHEN and message.arrival.tzinfo is not None
        assert message.state == MessageState.RECEIVED


def test_a_fetched_batch_is_recorded_in_order_each_message_once(store: Storage) -> None:
    other = RAW.replace(b"<a1@", b"<b1@")
    store.intake.record(RAW, WHEN, "smp", None, "imap", DeliveryRef("smp", "INBOX", 7, 1))

    def found_at(raw: bytes, uid: int) -> Incoming:
        return Incoming(raw, WHEN, "smp-zhipu-2024", DeliveryRef("smp", "INBOX", 7, uid))

    # known already; new; the new one again under another UID (one copy per Message-ID); a re-read UID
    batch = [found_at(RAW, 2), found_at(other, 3), found_at(other + b"\r\n", 4), found_at(RAW, 1)]
    recorded = store.intake.record_many(batch, "smp", "imap", cursor_to=DeliveryRef("smp", "INBOX", 7, 4))
    assert [r.new for r in recorded] == [False, True, False, False]
    assert recorded[1].message_pk == recorded[2].message_pk != recorded[0].message_pk == recorded[3].message_pk
    assert sorted(d.uid for d in store.intake.deliveries_of(recorded[0].message_pk)) == [1, 2]
    assert sorted(d.uid for d in store.intake.deliveries_of(recorded[1].message_pk)) == [3, 4]
    assert store.intake.cursor("smp", "INBOX") == (7, 4)
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2
        # what intake hands on to reading of a new message is its row as recorded
        assert [r.copy for r in recorded if r.new] == [archived_copy(session, recorded[1].message_pk)]
        assert [r.copy for r in recorded if not r.new] == [None, None, None]


def test_uidvalidity_reset_restarts_the_cursor(store: Storage) -> None:
    store.intake.record(RAW, WHEN, "smp", None, "imap", DeliveryRef("smp", "INBOX", 7, 5))
    store.intake.reset_cursor("smp", "INBOX", 8)
    assert store.intake.cursor("smp", "INBOX") == (8, 0)


def test_claims_are_exclusive_and_released(store: Storage) -> None:
    for n in range(3):
        store.intake.record(RAW.replace(b"<a1@", f"<a{n + 2}@".encode()), WHEN, "smp", None, "import", None)
    mine = store.to_decide.claim("w1", 2)
    theirs = store.to_decide.claim("w2", 5)
    assert len(mine) == 2 and len(theirs) == 1 and not set(mine) & set(theirs)
    assert store.to_decide.claim("w3", 5) == []
    assert store.to_decide.release_stale_claims(None) == 3
    assert len(store.to_decide.claim("w3", 5)) == 3


def test_reference_numbers_count_up_per_call(store: Storage) -> None:
    with store.sessions() as session, session.begin():
        numbers = [next_reference_number(session, "smp-zhipu-2024") for _ in range(3)]
        other = next_reference_number(session, "caai-ant-2024")
    assert numbers == [1, 2, 3] and other == 1


def test_sqlite_writers_of_one_process_take_turns_in_order(tmp_path: Path) -> None:
    """A thread writing all the time must not keep an occasional writer (the sender) waiting."""
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE log (who TEXT)"))
    order: list[str] = []
    busy_holds_turn = threading.Event()
    stop = threading.Event()

    def busy_writer() -> None:
        while not stop.is_set():
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO log VALUES ('busy')"))
                busy_holds_turn.set()
                time.sleep(0.002)  # a decision's work inside its transaction
            order.append("busy")

    def occasional_writer() -> None:
        busy_holds_turn.wait()
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO log VALUES ('occasional')"))
        order.append("occasional")

    threads = [threading.Thread(target=busy_writer), threading.Thread(target=occasional_writer)]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=5)
    stop.set()
    threads[0].join(timeout=5)
    engine.dispose()
    assert "occasional" in order, "the occasional writer never got a turn"
    assert order.index("occasional") <= 2, f"it waited behind {order.index('occasional')} busy transactions"


def test_a_deferred_commit_leaves_the_next_transaction_durable(database_url: str) -> None:
    """Only the transaction that defers durability commits without waiting for the disk."""
    engine = make_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    setting = text("SHOW synchronous_commit" if postgres else "PRAGMA synchronous")
    durable, deferred = ("on", "off") if postgres else (2, 1)  # SQLite: FULL is 2, NORMAL 1
    try:
        with Session(engine) as session, session.begin():
            assert session.scalar(setting) == durable
            defer_durability(session)
            assert session.scalar(setting) == deferred
        with Session(engine) as session, session.begin():
            assert session.scalar(setting) == durable
    finally:
        engine.dispose()


def test_the_answer_limits_count_from_indexes_alone(tmp_path: Path) -> None:
    """The four counts behind the answer limits read indexes and never the outbox's rows.

    A row carries the answer's bytes, and SQLite reaches the columns stored after them only by
    walking the row's overflow pages: a count that checks ``kind`` or ``state`` in the table costs
    a walk through every answer of the window, to the same domain in a rush most of them.
    """
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    upgrade(engine)
    store = Storage(engine, RawArchive(tmp_path / "archive"))
    executed: list[tuple[str, tuple[object, ...]]] = []

    def note(_conn: object, _cursor: object, statement: str, parameters: tuple[object, ...], *_: object) -> None:
        executed.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    with store.sessions() as session:
        answers_counted(session, WHEN, WHEN, "a@example.edu.cn", "example.edu.cn")
    event.remove(engine, "before_cursor_execute", note)
    [(statement, parameters)] = [(s, p) for s, p in executed if "count(" in s]
    with engine.connect() as connection:
        plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    reads = [step for step in plan if step.startswith(("SCAN outbox", "SEARCH outbox"))]
    assert len(reads) == 3, plan  # the mailbox's, the domain's, and one pass for the hour and the day
    assert all("COVERING INDEX" in step for step in reads), plan


def test_a_batch_is_archived_whole_and_in_order_or_its_failure_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``put_all`` writes several files at once: each is whole on disk when it returns, the digests
    follow the input's order (the same bytes twice are one file), and one failed write is raised."""
    archive = RawArchive(tmp_path / "archive")
    raws = [f"message {n}\r\n".encode() * (n + 1) for n in range(9)] + [b"message 0\r\n"]
    digests = archive.put_all(raws)
    assert [archive.get(digest) for digest in digests] == raws
    assert digests[0] == digests[-1]
    assert len(list((tmp_path / "archive").rglob("*.eml"))) == 9

    keep = os.replace

    def refuse_one(source: str, target: Path) -> None:
        if Path(source).read_bytes() == b"refused":
            raise OSError("disk full")
        keep(source, target)

    monkeypatch.setattr(os, "replace", refuse_one)
    with pytest.raises(OSError, match="disk full"):
        archive.put_all([b"fine 1", b"refused", b"fine 2"])
    assert not list((tmp_path / "archive").rglob(".tmp-*")), "a half-written file was left"
    assert archive.contains(sha256_hex(b"fine 1")) and archive.contains(sha256_hex(b"fine 2"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ack", "notice", "digest"]),
            st.sampled_from(["pending", "sent", "suppressed", "failed"]),
            st.sampled_from(["a@x.edu.cn", "b@x.edu.cn", "c@y.edu.cn"]),
            st.integers(0, 60 * 48),  # minutes before now
        ),
        max_size=30,
    )
)
def test_the_answer_counts_are_what_the_outbox_holds(store: Storage, answers: list[tuple[str, str, str, int]]) -> None:
    """The four counts, read from indexes in one statement, against the rows counted one by one."""
    now = datetime(2024, 9, 8, 12, 0, tzinfo=UTC)
    day_ago, hour_ago = now - timedelta(days=1), now - timedelta(hours=1)
    with store.sessions() as session, session.begin():
        session.execute(delete(OutboxMail))
        for number, (kind, state, address, minutes) in enumerate(answers):
            created = now - timedelta(minutes=minutes)
            add_to_outbox(
                session,
                kind=kind,
                message_pk=None,
                call_id="smp-zhipu-2024",
                mailbox=None,
                sender="min.gao@aminer.cn",
                recipients=[address],
                to_addr=address,
                to_key=address,
                to_domain=address.split("@")[1],
                message_id=f"<count-{number}@aminer.cn>",
                raw=b"x" * 5000,
                state=OutboxState(state),
                now=created,
                last_reply=None,
            )
    counted = [
        (address, minutes)
        for kind, state, address, minutes in answers
        if kind in ("ack", "notice") and state != "suppressed" and minutes <= 24 * 60
    ]
    with store.sessions() as session:
        counts = answers_counted(session, day_ago, hour_ago, "a@x.edu.cn", "x.edu.cn")
    assert counts == AnswerCounts(
        to_address_in_day=sum(address == "a@x.edu.cn" for address, _ in counted),
        to_domain_in_day=sum(address.endswith("@x.edu.cn") for address, _ in counted),
        in_hour=sum(minutes <= 60 for _, minutes in counted),
        in_day=len(counted),
    )
