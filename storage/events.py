"""The kinds of the event log: every change worth an audit line, one name each.

Events are written in the same transaction as the change they record (``add_event``), and
read back by the digest, ``status`` and ``queue show``; a kind is a stored string, so a value here
is never renamed once released.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from storage.db import utcnow
from storage.models import EVENTS, OutboxState


class EventKind(StrEnum):
    # deciding
    DECIDED = "decided"  # a message was decided (outcome, rule, reference)
    FAILED = "failed"  # deciding stopped with an error: the message went to review
    BOUNCED = "bounced"  # a bounce named one of our answers
    NOT_ANSWERED = "not-answered"  # an answer was due but had nowhere to go
    ANSWER_LIMIT = "answer-limit"  # a sending limit held answers back (alerted once a day)
    # the review queue, by an admin
    QUEUE_RETRIED = "queue-retried"
    QUEUE_CONFIRMED = "queue-confirmed"
    QUEUE_RESOLVED = "queue-resolved"
    QUEUE_CORRECTED = "queue-corrected"
    QUEUE_REJECTED = "queue-rejected"
    # sending: one per state an answer ends a conversation in
    OUTBOX_PENDING = "outbox-pending"
    OUTBOX_SENDING = "outbox-sending"
    OUTBOX_COMMITTING = "outbox-committing"
    OUTBOX_SENT = "outbox-sent"
    OUTBOX_FAILED = "outbox-failed"
    OUTBOX_SUPPRESSED = "outbox-suppressed"
    OUTBOX_RECOVERED = "outbox-recovered"  # a send a stop interrupted was settled (detail: the verdict)
    # the rest
    DIGEST_QUEUED = "digest-queued"
    OAUTH_REFRESH = "oauth-token"  # a refresh token was refused or works again
    PURGED = "purged"

    @classmethod
    def of_outbox_state(cls, state: OutboxState) -> EventKind:
        """The event that records an answer ending up in ``state``."""
        return cls(f"outbox-{state.value}")


def add_event(session: Session, kind: EventKind, actor: str, message_pk: int | None = None, **detail: Any) -> None:
    """Log ``kind`` in ``session``'s transaction: the line commits with the change it records, or neither does."""
    row = {"at": utcnow(), "kind": kind.value, "actor": actor, "message_pk": message_pk, "detail": detail}
    session.execute(insert(EVENTS), row)
