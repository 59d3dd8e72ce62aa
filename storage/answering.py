"""The statements behind answering: what the outbox and the identity check ask of the database.

Named operations over the tables, so that neither ``mailbot.outbox`` nor ``mailbot.guard`` builds a
statement: the row an answer is added as, the answers counted against the sending limits,
whether the coordinators were already alerted of a limit, and who is on record for an application.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, ScalarSelect, bindparam, case, func, insert, select
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


@dataclass(frozen=True)
class AnswerCounts:
    """Automatic answers added (withheld ones not counted) in the windows the sending limits look at."""

    to_address_in_day: int
    to_domain_in_day: int
    in_hour: int
    in_day: int


def _counted_in_day(*narrowed_by: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    """The answers the limits count that were added since ``day_ago`` (withheld ones are not counted)."""
    return (
        OUTBOX.c.kind.in_(COUNTED_KINDS),
        OUTBOX.c.created_at >= bindparam("day_ago"),
        OUTBOX.c.state != OutboxState.SUPPRESSED,
        *narrowed_by,
    )


def _count_in_day(*narrowed_by: ColumnElement[bool]) -> ScalarSelect[int]:
    return select(func.count()).select_from(OUTBOX).where(*_counted_in_day(*narrowed_by)).scalar_subquery()


# The four counts run for every answer during a rush: one statement, built once, so that its cost
# in Python is paid once rather than four times. The per-mailbox and per-domain counts are
# subqueries, each reading its own index (to_key, to_domain); the hour's and the day's are one
# pass over the day's entries of the time index, which during a rush is every answer so far.
_COUNT_ANSWERS = (
    select(
        _count_in_day(OUTBOX.c.to_key == bindparam("to_key")),
        _count_in_day(OUTBOX.c.to_domain == bindparam("to_domain")),
        func.count(case((OUTBOX.c.created_at >= bindparam("hour_ago"), 1))),
        func.count(),
    )
    .select_from(OUTBOX)
    .where(*_counted_in_day())
)


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


def answers_counted(
    session: Session, day_ago: datetime, hour_ago: datetime, to_key: str, to_domain: str
) -> AnswerCounts:
    """Automatic answers added since ``day_ago`` to the address ``to_key``, to the domain
    ``to_domain``, since ``hour_ago``, and since ``day_ago`` in all (``hour_ago`` is the later)."""
    parameters = {"day_ago": day_ago, "hour_ago": hour_ago, "to_key": to_key, "to_domain": to_domain}
    row = session.connection().execute(_COUNT_ANSWERS, parameters).one()
    return AnswerCounts(*(int(count or 0) for count in row))


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
