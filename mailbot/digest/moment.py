"""The call as it stood at a moment: each message's outcome then, and each application as it was.

A message decided again later (an admin resolved it, a retry) had, at an earlier moment, the outcome
of its last decision before: the event log has it. The digest's words and its workbook both read the
call through here, so they show the same moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mailbot.decision import Outcome
from mailbot.export import ApplicationAt, Snapshot, message_fields
from storage.digests import applications_of, decided_messages, decision_events
from storage.events import EventKind
from storage.models import Application, Message

# Outcomes of a message that carried a readable form: the "new submissions" of a digest.
SUBMISSION_OUTCOMES = (
    Outcome.ACCEPTED,
    Outcome.INCOMPLETE,
    Outcome.REVISION,
    Outcome.DUPLICATE,
    Outcome.LATE,
)
# An application that arrived late is kept on record but is not in the running.
NOT_CURRENT = frozenset({Outcome.LATE.value})


@dataclass(frozen=True)
class DecidedThen:
    """A message's outcome at a moment, when it got it, and, for a decision it has since been
    decided past, what that earlier decision's event recorded (None: the message's row is it)."""

    outcome: str
    at: datetime
    recorded: dict[str, Any] | None = None


Standing = dict[int, tuple[Message, DecidedThen]]


def decisions_at(session: Session, call_id: str, now: datetime) -> Standing:
    """Each message of the call decided by ``now``, with the outcome it had then and when it got it.

    A message decided again later (an admin resolved it, a retry) had, at ``now``, the outcome of
    its last decision before: the event log has it.
    """
    standing: Standing = {}
    later: list[Message] = []
    for message in decided_messages(session, call_id):
        if message.decided_at is not None and message.decided_at <= now:
            standing[message.id] = (message, DecidedThen(str(message.outcome), message.decided_at))
        else:
            later.append(message)
    if later:
        earlier = decision_events(session, [m.id for m in later], now)
        by_id = {m.id: m for m in later}
        for pk, kind, detail, at in earlier:
            outcome = Outcome.UNREADABLE.value if kind == EventKind.FAILED else str((detail or {}).get("outcome") or "")
            if outcome and pk is not None:
                standing[pk] = (by_id[pk], DecidedThen(outcome, at, dict(detail or {})))
    return dict(sorted(standing.items(), key=lambda item: (item[1][0].arrival, item[0])))


def reason_then(message: Message, then: DecidedThen) -> str | None:
    """Why the message could not be read, as its decision at that moment recorded it."""
    if then.recorded is None:
        return message.reason
    return then.recorded.get("reason")


def by_outcome(outcomes: Iterable[str]) -> dict[str, int]:
    counts = Counter(outcomes)
    return {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}


def applications_at(session: Session, call_id: str, standing: Standing) -> list[ApplicationAt]:
    """The call's current applications (late ones excluded) as they stood when ``standing`` was taken."""
    return [view for view in every_application_at(session, call_id, standing) if view.status not in NOT_CURRENT]


def every_application_at(session: Session, call_id: str, standing: Standing) -> list[ApplicationAt]:
    """Every application of the call that existed when ``standing`` was taken, as it stood then."""
    counted = {o.value for o in SUBMISSION_OUTCOMES}
    forms: dict[int, list[Message]] = {}
    for message, then in standing.values():
        if message.application_id is not None and then.outcome in counted:
            forms.setdefault(message.application_id, []).append(message)
    views = []
    for application in applications_of(session, call_id):
        current = standing.get(application.current_message_pk)
        if current is not None:
            view = ApplicationAt(
                application,
                current[0],
                application.status,
                application.fields or {},
                tuple(str(name) for name in application.missing or ()),
                tuple(str(flag) for flag in application.flags or ()),
            )
        elif application.id in forms:
            view = _earlier_form(application, forms[application.id], standing)
        else:
            continue  # it did not exist yet
        views.append(view)
    return views


def _earlier_form(application: Application, forms: list[Message], standing: Standing) -> ApplicationAt:
    """An application whose current form came later: the latest form it had, and the status that gave it."""
    latest = max(forms, key=lambda m: (m.arrival, m.id))
    outcome = standing[latest.id][1].outcome
    first = next((m for m in forms if m.message_key == application.application_key), None)
    first_outcome = standing[first.id][1].outcome if first is not None else Outcome.ACCEPTED.value
    # that form's decision then: its event's record where a later decision has replaced it on the row
    decision = standing[latest.id][1].recorded or latest.decision or {}
    if outcome != Outcome.REVISION.value:
        status = outcome
    elif first_outcome in (Outcome.LATE.value, Outcome.DUPLICATE.value):
        status = first_outcome
    else:
        status = (Outcome.INCOMPLETE if decision.get("missing") else Outcome.ACCEPTED).value
    return ApplicationAt(
        application,
        latest,
        status,
        message_fields(latest) or {},
        tuple(str(name) for name in decision.get("missing") or ()),
        tuple(str(flag) for flag in decision.get("flags") or ()),
    )


def call_at(session: Session, call_id: str, now: datetime) -> Snapshot:
    """The call as it stood at ``now``, for its workbook: the same moment the digest's words show."""
    standing = decisions_at(session, call_id, now)
    return Snapshot(
        messages=tuple((message, then.outcome, then.recorded) for message, then in standing.values()),
        applications=tuple(every_application_at(session, call_id, standing)),
    )
