"""What the review queue's admin commands read and change: items by name, the queue, history, corrections.

``queue list`` and ``queue show`` read; ``queue reject`` and ``queue correct`` change a message
(and its application) through the operations below, inside the caller's transaction. Deciding an
item again goes through the decision transaction like any other message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import Application, Event, Message, MessageState

# the events whose detail holds fields an admin typed in, in the order they were typed
TYPED_IN = (EventKind.QUEUE_RESOLVED, EventKind.QUEUE_CORRECTED)
# the rule a decision names when an admin closed the item
REJECTED_BY_ADMIN = "rejected-by-admin"


def message_pk_named(session: Session, ident: str) -> int | None:
    """The message a person names by its reference, Message-ID, message key or row number."""
    found = session.scalar(
        select(Message.id).where(
            (Message.reference == ident) | (Message.message_key == ident) | (Message.message_id == ident)
        )
    )
    if found is None and ident.isdigit():
        found = session.scalar(select(Message.id).where(Message.id == int(ident)))
    return found


def review_queue(session: Session) -> list[Message]:
    """Every message waiting for a person, oldest arrival first."""
    return list(session.scalars(select(Message).where(Message.state == MessageState.REVIEW).order_by(Message.arrival)))


def history_of(session: Session, message_pk: int) -> list[Event]:
    """The event log of one message, in the order it happened."""
    return list(session.scalars(select(Event).where(Event.message_pk == message_pk).order_by(Event.at, Event.id)))


def typed_in_fields(session: Session, message_pk: int) -> dict[str, str]:
    """The fields typed in when the item was resolved, with every correction since."""
    typed: dict[str, str] = {}
    for event in session.scalars(
        select(Event).where(Event.message_pk == message_pk, Event.kind.in_(TYPED_IN)).order_by(Event.id)
    ):
        typed.update(event.detail.get("fields") or {})
    return typed


def close_as_rejected(message: Message, explanation: str) -> None:
    """Take a message out of the review queue without an application: done, by the admin rule."""
    message.state = MessageState.DONE
    decision = dict(message.decision or {})
    decision.update(rule=REJECTED_BY_ADMIN, explanation=explanation)
    message.decision = decision


def store_corrected_form(
    session: Session,
    message: Message,
    values: Mapping[str, Any],
    missing: Sequence[str],
    explanation: str,
    reading: Mapping[str, Any],
    now: datetime,
) -> dict[str, list[Any]]:
    """Store a corrected form of ``message``, and of its application if it is the current form.

    Returns each field that changed in the application, as ``[before, after]``.
    """
    application = session.get(Application, message.application_id) if message.application_id else None
    before = dict(application.fields) if application else {}
    decision = dict(message.decision or {})
    decision.update(missing=list(missing), explanation=explanation)
    message.decision = decision
    message.reading = dict(reading)
    if application is not None and application.current_message_pk == message.id:
        application.fields = dict(values)
        application.missing = list(missing)
        if application.status in ("accepted", "incomplete"):
            application.status = "incomplete" if missing else "accepted"
        application.updated_at = now
    return {name: [before.get(name), values.get(name)] for name in values if before.get(name) != values.get(name)}


def count_answer_attempt(session: Session, message: Message) -> None:
    """One more answer for ``message``: each answer needs its own Message-ID, numbered by attempt."""
    message.attempts += 1
    session.flush()
