"""The reads behind the coordinators' digest, and the record that it was queued.

Named operations over the tables, so that ``mailbot.digest`` builds no statement: the messages and
applications of a call, the decisions and closings the event log keeps, the answers that did not
arrive as they should, and the ``digests`` row whose key (call, day) lets one digest a day in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import Application, DigestRun, Event, Message, OutboxMail, OutboxState, SendVerdict

_DECISION_EVENTS = (EventKind.DECIDED, EventKind.FAILED)


def last_digest_at(session: Session, call_id: str, before: date) -> datetime | None:
    """When the call's latest digest for a day before ``before`` was built; None if there was none."""
    query = select(func.max(DigestRun.created_at)).where(DigestRun.call_id == call_id, DigestRun.day < before)
    return session.scalar(query)


def digest_run(session: Session, call_id: str, day: date) -> DigestRun | None:
    return session.get(DigestRun, (call_id, day))


def digest_mail(session: Session, call_id: str, day: date) -> OutboxMail | None:
    """The outbox row of the call's digest for ``day``, once queued."""
    run = digest_run(session, call_id, day)
    return session.get(OutboxMail, run.outbox_id) if run and run.outbox_id else None


def record_digest_run(session: Session, call_id: str, day: date, at: datetime, late: bool) -> DigestRun:
    """The ``digests`` row, flushed: a second one for the same call and day fails here (IntegrityError)."""
    run = DigestRun(call_id=call_id, day=day, created_at=at, late=late)
    session.add(run)
    session.flush()
    return run


def decided_messages(session: Session, call_id: str) -> Iterable[Message]:
    """Every message of the call that has an outcome, in order of arrival."""
    query = select(Message).where(Message.call_id == call_id, Message.outcome.is_not(None))
    return session.scalars(query.order_by(Message.arrival, Message.id))


def decision_events(
    session: Session, message_pks: Sequence[int], until: datetime
) -> Iterable[Row[int | None, str, dict[str, Any] | None, datetime]]:
    """Message, kind, detail and time of each decision (or failure) of the messages up to ``until``, oldest first."""
    return session.execute(
        select(Event.message_pk, Event.kind, Event.detail, Event.at)
        .where(Event.message_pk.in_(message_pks), Event.kind.in_(_DECISION_EVENTS), Event.at <= until)
        .order_by(Event.at, Event.id)
    )


def closed_by_admin(session: Session, message_pks: Sequence[int], until: datetime) -> set[int]:
    """Those of the messages an admin closed (``queue reject``) by ``until``."""
    query = select(Event.message_pk).where(
        Event.message_pk.in_(message_pks), Event.kind == EventKind.QUEUE_REJECTED, Event.at <= until
    )
    return {pk for pk in session.scalars(query) if pk is not None}


def applications_of(session: Session, call_id: str) -> Iterable[Application]:
    return session.scalars(select(Application).where(Application.call_id == call_id).order_by(Application.id))


def application_by_key(session: Session, application_key: str | None) -> Application | None:
    return session.scalar(select(Application).where(Application.application_key == application_key))


def answers_in_trouble(session: Session, call_id: str) -> Iterable[Row[OutboxMail, str | None]]:
    """Each acknowledgement of the call that bounced, failed, was withheld or may not have arrived, with
    the reference of the message it answers."""
    return session.execute(
        select(OutboxMail, Message.reference)
        .outerjoin(Message, Message.id == OutboxMail.message_pk)
        .where(
            OutboxMail.kind == "ack",
            OutboxMail.call_id == call_id,
            OutboxMail.bounced_at.is_not(None)
            | (OutboxMail.state == OutboxState.FAILED)
            | (OutboxMail.state == OutboxState.SUPPRESSED)  # forged, spam or over a limit: not answered
            | OutboxMail.id.in_(_presumed_sends(session)),
        )
    )


def _presumed_sends(session: Session) -> list[int]:
    """Answers a stop interrupted as the server took them and nothing could tell whether it kept them.

    Rare (one per stop and sending worker at most), so the event log is read rather than indexed.
    """
    details = session.scalars(select(Event.detail).where(Event.kind == EventKind.OUTBOX_RECOVERED))
    return [int(d["outbox_id"]) for d in details if d.get("verdict") == SendVerdict.PRESUMED.value]
