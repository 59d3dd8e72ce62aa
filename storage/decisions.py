"""The rows one decision reads and writes, inside the caller's transaction.

A decision's statements are built once and given their values when executed: building a statement
for every message cost more than running it. Rows are named by ``row_id`` (a bound name may not be
a column's). The rows are written as table statements, not ORM ones: the ORM's bookkeeping for a
handful of rows cost more than the rest of the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from parsers.model import Attachment
from storage.db import is_postgres, utcnow
from storage.events import EventKind, add_event
from storage.models import ATTACHMENTS, COUNTERS, MESSAGES, OUTBOX, OutboxMail


@dataclass(frozen=True)
class MessageFacts:
    """What deciding and answering need of a message's row, read once without an ORM object."""

    id: int
    message_key: str
    message_id: str | None
    sha256: str
    call_id: str | None
    arrival: datetime
    state: str
    attempts: int
    outcome: str | None
    reference: str | None


_FACTS = tuple(MESSAGES.c[name] for name in MessageFacts.__dataclass_fields__)
_SELECT_FACTS = select(*_FACTS).where(MESSAGES.c.id == bindparam("row_id")).with_for_update()
_SELECT_TO_READ = select(MESSAGES.c.call_id, MESSAGES.c.sha256, MESSAGES.c.size).where(
    MESSAGES.c.id == bindparam("row_id")
)
_SELECT_REFERENCE = select(MESSAGES.c.reference).where(MESSAGES.c.message_key == bindparam("key"))
_SELECT_OUR_ANSWER = select(OUTBOX.c.id).where(OUTBOX.c.message_id == bindparam("message_id"))
_SELECT_ANY_ATTACHMENT = select(ATTACHMENTS.c.id).where(ATTACHMENTS.c.message_pk == bindparam("row_id")).limit(1)
_UPDATE_MESSAGE = update(MESSAGES).where(MESSAGES.c.id == bindparam("row_id"))


def message_facts(session: Session, message_pk: int) -> MessageFacts:
    """The message's row, locked until the transaction ends (no other worker decides it meanwhile)."""
    return MessageFacts(*session.execute(_SELECT_FACTS, {"row_id": message_pk}).one())


class ArchivedCopy(NamedTuple):
    """Which call's form a message is read as, and where its bytes are (the archive's name) and how many."""

    call_id: str | None
    sha256: str
    size: int


def archived_copy(session: Session, message_pk: int) -> ArchivedCopy:
    """The message's call, SHA-256 and size, as recorded."""
    return ArchivedCopy(*session.execute(_SELECT_TO_READ, {"row_id": message_pk}).one())


def write_decision(session: Session, message_pk: int, columns: dict[str, Any]) -> None:
    """Set the message's columns (its state, outcome, reading, reference …) to what was decided."""
    session.execute(_UPDATE_MESSAGE, {"row_id": message_pk, **columns})


def reference_of(session: Session, message_key: str | None) -> str | None:
    """The reference number given to the message ``message_key``, if any."""
    if message_key is None:
        return None
    return session.scalar(_SELECT_REFERENCE, {"key": message_key})


def is_our_answer(session: Session, message_id: str) -> bool:
    """Whether ``message_id`` is one of the answers in the outbox (a message naming it replies to us)."""
    return session.scalar(_SELECT_OUR_ANSWER, {"message_id": message_id}) is not None


def has_attachments(session: Session, message_pk: int) -> bool:
    return session.scalar(_SELECT_ANY_ATTACHMENT, {"row_id": message_pk}) is not None


def store_attachments(session: Session, message_pk: int, attachments: Sequence[Attachment]) -> None:
    if attachments:
        session.execute(
            insert(ATTACHMENTS),
            [
                {
                    "message_pk": message_pk,
                    "filename": attachment.filename,
                    "kind": attachment.kind,
                    "size": attachment.size,
                    "sha256": attachment.sha256,
                    "role": attachment.role,
                }
                for attachment in attachments
            ],
        )


def record_bounces(session: Session, bounced_message_ids: Iterable[str], actor: str) -> None:
    """Mark the answers a bounce names as bounced (once each), with an event for each."""
    for bounced_id in bounced_message_ids:
        mail = session.scalar(select(OutboxMail).where(OutboxMail.message_id == bounced_id))
        if mail is not None and mail.bounced_at is None:
            mail.bounced_at = utcnow()
            add_event(session, EventKind.BOUNCED, actor, mail.message_pk, message_id=bounced_id)


def lock_call(session: Session, call_id: str) -> None:
    """Serialise decisions within one call across workers (until the transaction ends)."""
    if is_postgres(session.get_bind()):
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"mailbot-call:{call_id}"))))


_BUMP_COUNTER = (
    update(COUNTERS)
    .where(COUNTERS.c.call_id == bindparam("counted_call"))
    .values(last_number=COUNTERS.c.last_number + 1)
    .returning(COUNTERS.c.last_number)
)


def next_reference_number(session: Session, call_id: str) -> int:
    """The call's next number, counted up in one statement (its row stays locked until commit)."""
    number = session.execute(_BUMP_COUNTER, {"counted_call": call_id}).scalar_one_or_none()
    if number is None:  # the call's first number
        session.execute(insert(COUNTERS), {"call_id": call_id, "last_number": 1})
        return 1
    return int(number)
