"""Who may change an application, and how many automatic answers may leave: the checks the pipeline makes
against the database before it stores a decision and before it adds an answer to the outbox.

An application is changed (a revision replaces it, a second project is counted as the person's) only by
mail from an address already on it (an earlier sender, an address we answered, for a revision also the
form's email on record) or by a reply to one of our answers to it. Anything else naming the person is
held for the coordinators as an identity conflict: the earlier application stays current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from mailbot.config import Settings
from mailbot.decision import Decision, Outcome, PriorApplication
from mailbot.security import domain_of, recipient_key
from parsers.model import Envelope
from storage.models import EVENTS, MESSAGES, OUTBOX, OutboxState

# the answers the limits count: every mail to a person outside the fund (digests go to coordinators)
COUNTED_KINDS = ("ack", "notice")
LIMIT_EVENT = "answer-limit"
IDENTITY_CONFLICT = "identity-conflict"  # the flag and review reason of a held form
NOTIFIED_AT_MOST = 2


@dataclass(frozen=True)
class Conflict:
    """A form naming a known applicant that came from an address not on their application."""

    application_key: str  # the application it would change
    earlier_keys: tuple[str, ...]  # that application's messages
    sender: str  # the address the new form came from
    on_record: tuple[str, ...]  # addresses to tell (the ones we answered, else the first sender)


_SELECT_ON_RECORD = select(MESSAGES.c.id, MESSAGES.c.from_addr, MESSAGES.c.person_email, MESSAGES.c.arrival).where(
    MESSAGES.c.message_key.in_(bindparam("keys", expanding=True))
)
_SELECT_ANSWERS = select(OUTBOX.c.to_addr, OUTBOX.c.message_id, OUTBOX.c.state).where(
    OUTBOX.c.message_pk.in_(bindparam("pks", expanding=True)), OUTBOX.c.kind == "ack"
)


def identity_conflict(
    session: Session, decision: Decision, priors: Sequence[PriorApplication], envelope: Envelope
) -> Conflict | None:
    """The conflict a revision or second project would be, or None when its sender is on the application."""
    if decision.outcome not in (Outcome.REVISION, Outcome.DUPLICATE):
        return None
    key = decision.application_key if decision.outcome == Outcome.REVISION else decision.duplicate_of
    earlier = tuple(p.message_key for p in priors if p.application_key == key)
    if key is None or not earlier:
        return None
    rows = session.execute(_SELECT_ON_RECORD, {"keys": list(earlier)}).all()
    answers = session.execute(_SELECT_ANSWERS, {"pks": [row.id for row in rows]}).all()
    senders = [row.from_addr for row in sorted(rows, key=lambda row: row.arrival) if row.from_addr]
    answered = [row.to_addr for row in answers if row.to_addr and row.state != OutboxState.SUPPRESSED]
    known = {recipient_key(address) for address in (*senders, *answered)}
    if decision.outcome == Outcome.REVISION:
        # the form's own email: a secretary sent the first form, the applicant now sends the fix
        known |= {recipient_key(row.person_email) for row in rows if row.person_email}
    sender = recipient_key(envelope.from_addr)
    our_ids = {row.message_id for row in answers}
    replies_to_us = bool(our_ids.intersection((*envelope.in_reply_to, *envelope.references)))
    if sender in known or replies_to_us:
        return None
    told = list(dict.fromkeys(answered or senders[:1]))[:NOTIFIED_AT_MOST]
    return Conflict(key, earlier, envelope.from_addr.lower(), tuple(told))


# ---------------------------------------------------------------------------------------------- limits


def _count(session: Session, since: datetime, **where: str) -> int:
    query = (
        select(func.count())
        .select_from(OUTBOX)
        .where(
            OUTBOX.c.kind.in_(COUNTED_KINDS),
            OUTBOX.c.created_at >= since,
            OUTBOX.c.state != OutboxState.SUPPRESSED,
            *(OUTBOX.c[column] == value for column, value in where.items()),
        )
    )
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class LimitHit:
    why: str  # for the outbox row and the log
    overall: bool  # a cap on all answers (the coordinators are alerted), not one recipient's
    name: str  # which limit, for the alert


def limit_hit(session: Session, settings: Settings, recipient: str, now: datetime) -> LimitHit | None:
    """The first limit another answer to ``recipient`` would break, or None."""
    security = settings.security
    day_ago, hour_ago = now - timedelta(days=1), now - timedelta(hours=1)
    per_recipient = settings.smtp.max_answers_per_recipient_per_day
    sent = _count(session, day_ago, to_key=recipient_key(recipient))
    if sent >= per_recipient:
        why = f"{sent} automatic answers to this address in the last 24 hours (limit {per_recipient})"
        return LimitHit(why, False, "max_answers_per_recipient_per_day")
    domain = domain_of(recipient)
    sent = _count(session, day_ago, to_domain=domain)
    if sent >= security.max_answers_per_domain_per_day:
        limit = security.max_answers_per_domain_per_day
        return LimitHit(
            f"{sent} automatic answers to {domain} in the last 24 hours (limit {limit})",
            True,
            "max_answers_per_domain_per_day",
        )
    for name, since, limit, span in (
        ("max_answers_per_hour", hour_ago, security.max_answers_per_hour, "hour"),
        ("max_answers_per_day", day_ago, security.max_answers_per_day, "24 hours"),
    ):
        sent = _count(session, since)
        if sent >= limit:
            return LimitHit(f"{sent} automatic answers in the last {span} (limit {limit})", True, name)
    return None


def alerted_since(session: Session, limit: str, call_id: str, since: datetime) -> bool:
    """Whether the coordinators of ``call_id`` were told of ``limit`` since ``since`` (a handful of rows)."""
    rows = session.execute(select(EVENTS.c.detail).where(EVENTS.c.kind == LIMIT_EVENT, EVENTS.c.at >= since))
    return any((row.detail or {}).get("limit") == limit and (row.detail or {}).get("call") == call_id for row in rows)
