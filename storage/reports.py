"""What ``status`` and the metrics endpoint count: messages and answers by state, polls, limits, digests.

Read-only questions with plain answers (numbers, times, rows); the wording is the caller's.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import DigestRun, Event, MailboxCursor, Message, MessageState, OutboxMail, OutboxState


def messages_by_state(session: Session) -> dict[str, int]:
    """How many messages are in each state (a state without any is absent)."""
    rows = session.execute(select(Message.state, func.count()).group_by(Message.state))
    return {str(state): int(n) for state, n in rows}


def answers_by_state(session: Session) -> dict[str, int]:
    """How many outgoing mails are in each outbox state (a state without any is absent)."""
    rows = session.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state))
    return {str(state): int(n) for state, n in rows}


def bounced_answers(session: Session) -> int:
    """How many answers a bounce was matched to."""
    bounced = session.scalar(select(func.count()).select_from(OutboxMail).where(OutboxMail.bounced_at.is_not(None)))
    return int(bounced or 0)


def latest_failed_answers(session: Session, limit: int) -> list[OutboxMail]:
    """The ``limit`` newest answers the server refused for good, newest first."""
    return list(
        session.scalars(
            select(OutboxMail).where(OutboxMail.state == OutboxState.FAILED).order_by(OutboxMail.id.desc()).limit(limit)
        )
    )


def oldest_review_arrival(session: Session) -> datetime | None:
    """When the oldest message waiting in the review queue arrived, or None if the queue is empty."""
    return session.scalar(select(func.min(Message.arrival)).where(Message.state == MessageState.REVIEW))


def limit_hits_since(session: Session, since: datetime) -> list[Event]:
    """The answer limits hit since ``since``, oldest first."""
    return list(
        session.scalars(select(Event).where(Event.kind == EventKind.ANSWER_LIMIT, Event.at >= since).order_by(Event.at))
    )


def answers_held_back_since(session: Session, since: datetime) -> int:
    """How many answers a limit held back (recorded, not sent) since ``since``."""
    held = session.scalar(
        select(func.count())
        .select_from(OutboxMail)
        .where(OutboxMail.state == OutboxState.SUPPRESSED, OutboxMail.created_at >= since)
    )
    return int(held or 0)


def last_digest_day(session: Session, call_id: str) -> date | None:
    """The day of the newest digest made for ``call_id``, or None before the first."""
    return session.scalar(select(func.max(DigestRun.day)).where(DigestRun.call_id == call_id))


def poll_cursor(session: Session, mailbox: str, folder: str) -> MailboxCursor | None:
    """The folder's cursor, with its last good poll and last error; None before its first poll."""
    return session.get(MailboxCursor, (mailbox, folder))


def poll_failing(cursor: MailboxCursor | None) -> bool:
    """The last poll of the folder failed (an error newer than its last good poll)."""
    if cursor is None or not cursor.last_error:
        return False
    return cursor.last_success is None or (
        cursor.last_error_at is not None and cursor.last_error_at > cursor.last_success
    )
