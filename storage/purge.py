"""The statements of a purge (``mailbot purge``): which rows it scrubs, and the scrubbing done by statement.

``mailbot/admin/purge.py`` decides what of a message and an application is kept (it changes those rows as
objects, in the same transaction); the reads that find them and the updates over many rows at once
are here, 500 messages a statement so that no list of ids outgrows what a database takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.effects import forget_effects_of
from storage.models import Application, AttachmentRecord, Event, Message, OutboxMail

# what an answer keeps once purged: its row, state and times, nothing of its mail or its recipient
_BLANK_ANSWER: dict[str, object] = {
    "raw": b"",
    "recipients": [],
    "to_addr": None,
    "to_key": None,
    "to_domain": None,
    "last_reply": None,
}


def _chunks(items: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def messages_to_purge(session: Session, call_id: str, before: datetime) -> list[Message]:
    """The messages of ``call_id`` that arrived before ``before`` and are not purged yet."""
    return list(
        session.scalars(
            select(Message).where(Message.call_id == call_id, Message.arrival < before, Message.purged_at.is_(None))
        )
    )


def hashes_kept_by_others(session: Session, message_pks: list[int]) -> set[str]:
    """The archive files (sha256) of every message not among ``message_pks``: those files stay."""
    return set(session.scalars(select(Message.sha256).where(Message.id.not_in(message_pks or [-1]))))


def applications_to_purge(session: Session, call_id: str, message_pks: list[int]) -> list[Application]:
    """The applications of ``call_id`` whose current message is one of ``message_pks``."""
    return list(
        session.scalars(
            select(Application).where(Application.call_id == call_id, Application.current_message_pk.in_(message_pks))
        )
    )


def forget_effects_of_purged(session: Session, message_pks: list[int], now: datetime) -> None:
    """The effects of these messages keep no detail and count as done (``forget_effects_of``)."""
    for chunk in _chunks(message_pks):
        forget_effects_of(session, chunk, now)


def scrub_answers_attachments_and_events(session: Session, call_id: str, message_pks: list[int]) -> None:
    """Attachment names, answers and event details of these messages go, and the call's digests."""
    for chunk in _chunks(message_pks):
        session.execute(
            update(AttachmentRecord).where(AttachmentRecord.message_pk.in_(chunk)).values(filename="(purged)")
        )
        session.execute(update(OutboxMail).where(OutboxMail.message_pk.in_(chunk)).values(**_BLANK_ANSWER))
        session.execute(update(Event).where(Event.message_pk.in_(chunk)).values(detail={}))
    # digests list new submissions by name and carry the workbook: they go with the call's data
    session.execute(
        update(OutboxMail).where(OutboxMail.kind == "digest", OutboxMail.call_id == call_id).values(**_BLANK_ANSWER)
    )
