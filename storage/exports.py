"""What exports and the reviewers' bundle read: decided messages and applications with their current form."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Application, Message


def decided_messages(session: Session, call_id: str | None = None) -> list[Message]:
    """Every message with an outcome (of ``call_id``), in order of arrival."""
    query = select(Message).where(Message.outcome.is_not(None)).order_by(Message.arrival, Message.id)
    if call_id:
        query = query.where(Message.call_id == call_id)
    return list(session.scalars(query))


def messages_with_outcomes(session: Session, call_id: str, outcomes: Collection[str]) -> list[Message]:
    """The messages of ``call_id`` decided as one of ``outcomes``, in order of arrival."""
    return list(
        session.scalars(
            select(Message)
            .where(Message.call_id == call_id, Message.outcome.in_(tuple(outcomes)))
            .order_by(Message.arrival, Message.id)
        )
    )


def applications_with_current_form(session: Session, call_id: str | None) -> list[tuple[Application, Message]]:
    """Every application (of ``call_id``) with the message that is its current form, in order of creation."""
    query = select(Application, Message).join(Message, Message.id == Application.current_message_pk)
    if call_id:
        query = query.where(Application.call_id == call_id)
    return [(application, message) for application, message in session.execute(query.order_by(Application.id))]
