"""The statements behind answering: what the outbox and the identity check ask of the database.

Named operations over the tables, so that neither ``mailbot.outbox`` nor ``mailbot.guard`` builds a
statement: the row an answer is added as, the answers counted against the sending limits,
whether the coordinators were already alerted of a limit, and who is on record for an application.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, Select, bindparam, func, insert, select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import EVENTS, MESSAGES, OUTBOX, OutboxState

# the answers the limits count: every mail to a person outside the fund (digests go to coordinators)
COUNTED_KINDS = ("ack", "notice")

# built once and given their values when executed: these run for every answer during a rush
_SELECT_ON_RECORD = select(MESSAGES.c.id, MESSAGES.c.from_addr, MESSAGES.c.person_email, MESSAGES.c.arrival).where(
    MESSAGES.c.message_key.in_(bindparam("keys", expanding=True))
)
_SELECT_ANSWERS = select(OUTBOX.c.to_addr, OUTBOX.c.message_id, OUTBOX.c.state).where(
    OUTBOX.c.message_pk.in_(bindparam("pks", expanding=True)), OUTBOX.c.kind == "ack"
)


def _count_answers(*narrowed_by: ColumnElement[bool]) -> Select[int]:
    return (
        select(func.count())
        .select_from(OUTBOX)
        .where(
            OUTBOX.c.kind.in_(COUNTED_KINDS),
            OUTBOX.c.created_at >= bindparam("since"),
            OUTBOX.c.state != OutboxState.SUPPRESSED,
            *narrowed_by,
        )
    )


# the four counts run for every answer: built once, they cost a quarter of a statement built per call
_COUNT_ALL = _count_answers()
_COUNT_TO_ADDRESS = _count_answers(OUTBOX.c.to_key == bindparam("to_key"))
_COUNT_TO_DOMAIN = _count_answers(OUTBOX.c.to_domain == bindparam("to_domain"))


def add_to_outbox(
    session: Session,
    *,
    kind: str,
    message_pk: int | None,
    call_id: str,
    mailbox: str | None,
    sender: str,
    recipients: list[str],
    to_addr: str | None,
    to_key: str | None,
    to_domain: str | None,
    message_id: str,
    raw: bytes,
    state: OutboxState,
    now: datetime,
    last_reply: str | None,
) -> int:
    """Write one outbox row in the caller's transaction, due at ``now`` and not tried yet; its id."""
    added = session.execute(
        insert(OUTBOX),
        {
            "kind": kind,
            "message_pk": message_pk,
            "call_id": call_id,
            "mailbox": mailbox,
            "sender": sender,
            "recipients": recipients,
            "to_addr": to_addr,
            "to_key": to_key,
            "to_domain": to_domain,
            "message_id": message_id,
            "raw": raw,
            "state": state,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "last_reply": last_reply,
        },
    )
    key = cast("CursorResult[Any]", added).inserted_primary_key
    assert key is not None, "an insert of one row knows the row's id"
    return int(key[0])


def answers_counted(session: Session, since: datetime, to_key: str | None = None, to_domain: str | None = None) -> int:
    """Automatic answers added since ``since`` (to one address or one domain, or all), withheld ones not counted."""
    if to_key is not None:
        return int(session.connection().scalar(_COUNT_TO_ADDRESS, {"since": since, "to_key": to_key}) or 0)
    if to_domain is not None:
        return int(session.connection().scalar(_COUNT_TO_DOMAIN, {"since": since, "to_domain": to_domain}) or 0)
    return int(session.connection().scalar(_COUNT_ALL, {"since": since}) or 0)


def limit_alerted_since(session: Session, limit: str, call_id: str, since: datetime) -> bool:
    """Whether the coordinators of ``call_id`` were told of ``limit`` since ``since`` (a handful of rows)."""
    query = select(EVENTS.c.detail).where(EVENTS.c.kind == EventKind.ANSWER_LIMIT, EVENTS.c.at >= since)
    details = [row.detail or {} for row in session.execute(query)]
    return any(detail.get("limit") == limit and detail.get("call") == call_id for detail in details)


def messages_on_record(session: Session, message_keys: Sequence[str]) -> Sequence[Row[int, str, str | None, datetime]]:
    """Row id, sender, form email and arrival of each of the messages ``message_keys``."""
    return session.execute(_SELECT_ON_RECORD, {"keys": list(message_keys)}).all()


def answers_to(session: Session, message_pks: Sequence[int]) -> Sequence[Row[str | None, str, str]]:
    """Recipient, Message-ID and state of every acknowledgement of the messages ``message_pks``."""
    return session.execute(_SELECT_ANSWERS, {"pks": list(message_pks)}).all()
