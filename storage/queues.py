"""The two durable queues: messages waiting to be decided, and answers waiting to be sent.

Each is a table whose ``state`` column is the queue, as a mail server's spool is: a worker claims
rows (``received`` → ``processing``, ``pending`` → ``sending``), works on them, and either moves
them on in its own transaction or gives them back. A claim is taken with ``SKIP LOCKED`` where the
database has it, so several workers share a queue without taking the same row twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Update, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.db import defer_durability, transaction, utcnow
from storage.failpoints import failpoint
from storage.models import MESSAGES, OUTBOX, Message, MessageState, OutboxMail, OutboxState

# An answer's statements while it is sent, built once and given their values when executed
# (building them cost more than running them); rows are named by ``row_id``, as a bound name may
# not be a column's.
_SELECT_CLAIMED = select(
    OUTBOX.c.id,
    OUTBOX.c.sender,
    OUTBOX.c.recipients,
    OUTBOX.c.raw,
    OUTBOX.c.message_id,
    OUTBOX.c.created_at,
    OUTBOX.c.attempts,
    OUTBOX.c.mailbox,
).where(OUTBOX.c.id.in_(bindparam("row_ids", expanding=True)))
_MARK_HANDING_OVER = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("row_id"),
        OUTBOX.c.state == OutboxState.SENDING,
        OUTBOX.c.claimed_by == bindparam("worker"),
    )
    .values(state=OutboxState.COMMITTING)
)
# the columns set are the ones given at execution
_RECORD_OUTCOME = (
    update(OUTBOX).where(OUTBOX.c.id == bindparam("row_id")).returning(OUTBOX.c.message_pk, OUTBOX.c.message_id)
)


@dataclass(frozen=True)
class ClaimedAnswer:
    """What sending needs of an answer this worker claimed."""

    sender: str
    recipients: list[str]
    raw: bytes
    message_id: str
    created_at: datetime
    attempts: int
    mailbox: str | None


def _claim(
    sessions: sessionmaker[Session], point: str, pick: Select[Any], mark: Callable[[list[int]], Update]
) -> list[int]:
    """Take the rows ``pick`` finds for this worker alone: rows another worker holds are skipped.

    Table statements, not ORM ones: a claim runs for every few messages, and an ORM update
    spends most of its time on keeping a session's objects in step, of which a claim has none.
    Nothing leaves the machine on a claim's commit, so it does not wait for the disk: a lost
    claim only means the row is claimed again (see ``defer_durability``).
    """
    with transaction(sessions) as session:
        ids = [int(pk) for pk in session.scalars(pick.with_for_update(skip_locked=True))]
        if ids:
            defer_durability(session)
            session.execute(mark(ids))
            failpoint(point)
        return ids


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _oldest_received(limit: int) -> Select[Any]:
    return (
        select(MESSAGES.c.id)
        .where(MESSAGES.c.state == MessageState.RECEIVED)
        .order_by(MESSAGES.c.arrival, MESSAGES.c.id)
        .limit(limit)
    )


class MessagesToDecide:
    """Recorded messages not decided yet (``received``), and the ones a worker is deciding (``processing``)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def next_in_line(self, limit: int) -> list[int]:
        """The ``limit`` unprocessed messages next in line (oldest arrival first), unclaimed."""
        with self.sessions() as session:
            return [int(pk) for pk in session.scalars(_oldest_received(limit))]

    def claim(self, worker: str, limit: int) -> list[int]:
        """Take up to ``limit`` unprocessed messages, oldest arrival first, for this worker alone."""
        return _claim(
            self.sessions,
            "decide.claim",
            _oldest_received(limit),
            lambda ids: (
                update(MESSAGES)
                .where(MESSAGES.c.id.in_(ids), MESSAGES.c.state == MessageState.RECEIVED)
                .values(
                    state=MessageState.PROCESSING,
                    claimed_by=worker,
                    claimed_at=utcnow(),
                    attempts=MESSAGES.c.attempts + 1,
                )
            ),
        )

    @staticmethod
    def earlier_undecided(session: Session, call_id: str, arrival: datetime, message_pk: int) -> bool:
        """Whether a message of ``call_id`` that arrived before this one is not decided yet."""
        earlier = (Message.arrival < arrival) | ((Message.arrival == arrival) & (Message.id < message_pk))
        query = select(Message.id).where(
            Message.call_id == call_id,
            Message.state.in_([MessageState.RECEIVED, MessageState.PROCESSING]),
            earlier,
        )
        return session.scalar(query.limit(1)) is not None

    def unclaim(self, message_pk: int) -> None:
        """Give a claimed message back untouched, to be taken again later (by any worker)."""
        with transaction(self.sessions) as session:
            session.execute(
                update(Message)
                .where(Message.id == message_pk, Message.state == MessageState.PROCESSING)
                .values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None, attempts=Message.attempts - 1)
            )

    def release_stale_claims(self, older_than: timedelta | None) -> int:
        """Give back claims of workers that died; ``None`` releases every claim (single process start)."""
        with transaction(self.sessions) as session:
            query = update(Message).where(Message.state == MessageState.PROCESSING)
            if older_than is not None:
                query = query.where(Message.claimed_at < utcnow() - older_than)
            result = session.execute(query.values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None))
            return _rowcount(result)

    def release_claims_of(self, worker: str) -> int:
        """Give back the messages ``worker`` claimed and did not decide (its processing round failed)."""
        with transaction(self.sessions) as session:
            result = session.execute(
                update(Message)
                .where(Message.state == MessageState.PROCESSING, Message.claimed_by == worker)
                .values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None)
            )
            return _rowcount(result)

    def waiting_count(self) -> int:
        """How many messages are not decided yet (claimed or not)."""
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.state.in_([MessageState.RECEIVED, MessageState.PROCESSING]))
                )
                or 0
            )


class AnswersToSend:
    """Composed mail due to go out (``pending``), and the mail a worker is sending (``sending``, ``committing``)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def claim(self, worker: str, limit: int) -> list[int]:
        """Take up to ``limit`` answers that are due, the longest due first, for this worker alone."""
        now = utcnow()
        pick = (
            select(OUTBOX.c.id)
            .where(OUTBOX.c.state == OutboxState.PENDING, OUTBOX.c.next_attempt_at <= now)
            .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
            .limit(limit)
        )
        return _claim(
            self.sessions,
            "outbox.claim",
            pick,
            lambda ids: (
                update(OUTBOX)
                .where(OUTBOX.c.id.in_(ids), OUTBOX.c.state == OutboxState.PENDING)
                .values(state=OutboxState.SENDING, sending_since=now, claimed_by=worker, attempts=OUTBOX.c.attempts + 1)
            ),
        )

    def start_conversation(self, outbox_id: int, worker: str) -> bool:
        """Whether ``worker`` still holds this claimed answer; if so, its staleness counts from now.

        A batch is claimed at once and sent one by one: measured from the claim, the last answers
        of a slow batch would look abandoned to another worker, which would send them as well.
        """
        with transaction(self.sessions) as session:
            result = session.execute(
                update(OutboxMail)
                .where(
                    OutboxMail.id == outbox_id,
                    OutboxMail.state == OutboxState.SENDING,
                    OutboxMail.claimed_by == worker,
                )
                .values(sending_since=utcnow())
            )
            return _rowcount(result) == 1

    def claimed_answers(self, ids: list[int]) -> dict[int, ClaimedAnswer]:
        """What sending needs of each claimed answer, by id, read in one query for the batch."""
        with self.sessions() as session:
            rows = session.execute(_SELECT_CLAIMED, {"row_ids": ids})
            return {row.id: ClaimedAnswer(*row[1:]) for row in rows}

    @staticmethod
    def mark_handing_over(session: Session, outbox_id: int, worker: str) -> bool:
        """Mark a claimed answer ``committing`` in the caller's transaction (its end goes out next);
        whether ``worker`` still held it (it is not marked if another worker took it over)."""
        marked = session.execute(_MARK_HANDING_OVER, {"row_id": outbox_id, "worker": worker})
        return getattr(marked, "rowcount", 0) == 1

    @staticmethod
    def record_outcome(
        session: Session,
        outbox_id: int,
        state: OutboxState,
        reply: str,
        sent_at: datetime | None = None,
        next_attempt_at: datetime | None = None,
    ) -> tuple[int | None, str]:
        """Record, in the caller's transaction, the state a conversation left an answer in and the
        server's reply; the claim is let go. The message it answers (row id) and its Message-ID."""
        changes: dict[str, object] = {"state": state, "last_reply": reply, "claimed_by": None}
        if sent_at is not None:
            changes["sent_at"] = sent_at
        if next_attempt_at is not None:
            changes["next_attempt_at"] = next_attempt_at
        message_pk, message_id = session.execute(_RECORD_OUTCOME, {"row_id": outbox_id, **changes}).one()
        return message_pk, message_id

    def interrupted_sends(self, older_than: timedelta | None) -> list[tuple[int, str]]:
        """(id, state) of outbox rows a worker left mid-conversation: it stopped before the reply."""
        with self.sessions() as session:
            query = select(OutboxMail.id, OutboxMail.state).where(
                OutboxMail.state.in_([OutboxState.SENDING, OutboxState.COMMITTING])
            )
            if older_than is not None:
                query = query.where(OutboxMail.sending_since < utcnow() - older_than)
            return [(row.id, row.state) for row in session.execute(query)]

    def release_claims_of(self, worker: str, ends_not_sent: Collection[int] = ()) -> int:
        """Give back the answers ``worker`` claimed and never handed the end of over: nobody has them.

        Those are its ``sending`` rows, and the ``committing`` rows in ``ends_not_sent``: marked, or
        possibly marked, just before a failure stopped the end from going out.
        """
        unsent = OutboxMail.state == OutboxState.SENDING
        if ends_not_sent:
            unsent |= (OutboxMail.state == OutboxState.COMMITTING) & OutboxMail.id.in_(list(ends_not_sent))
        with transaction(self.sessions) as session:
            result = session.execute(
                update(OutboxMail)
                .where(unsent, OutboxMail.claimed_by == worker)
                .values(state=OutboxState.PENDING, claimed_by=None, next_attempt_at=utcnow())
            )
            return _rowcount(result)

    def counts_by_state(self) -> dict[str, int]:
        """How many outbox rows are in each state."""
        with self.sessions() as session:
            rows = session.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state)).all()
            return {state: int(count) for state, count in rows}
