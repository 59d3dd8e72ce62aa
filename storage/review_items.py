"""What the review queue's admin commands read: an item by any of its names, the queue, its history.

``queue list``, ``queue show`` and the queue actions ask these questions; the actions' changes
themselves go through the decision transaction and the event log.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import Event, Message, MessageState

# the events whose detail holds fields an admin typed in, in the order they were typed
TYPED_IN = (EventKind.QUEUE_RESOLVED, EventKind.QUEUE_CORRECTED)


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
