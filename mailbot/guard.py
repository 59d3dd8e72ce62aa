"""Who may change an application: the check the pipeline makes against the database before it stores a
decision. (How many automatic answers may leave is checked where they are added: ``mailbot.outbox``.)

An application is changed (a revision replaces it, a second project is counted as the person's) only by
mail from an address already on it (an earlier sender, an address we answered, for a revision also the
form's email on record) or by a reply to one of our answers to it. Anything else naming the person is
held for the coordinators as an identity conflict: the earlier application stays current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from mailbot.decision import Decision, Outcome, PriorApplication
from mailbot.security import recipient_key
from parsers.model import Envelope
from storage.answering import answers_to, messages_on_record
from storage.decisions import reference_of
from storage.models import OutboxState

IDENTITY_CONFLICT = "identity-conflict"  # the flag and review reason of a held form
NOTIFIED_AT_MOST = 2


@dataclass(frozen=True)
class Conflict:
    """A form naming a known applicant that came from an address not on their application."""

    application_key: str  # the application it would change
    earlier_keys: tuple[str, ...]  # that application's messages
    sender: str  # the address the new form came from
    on_record: tuple[str, ...]  # addresses to tell (the ones we answered, else the first sender)


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
    rows = messages_on_record(session, earlier)
    answers = answers_to(session, [row.id for row in rows])
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


def conflict_diagnostics(session: Session, conflict: Conflict) -> dict[str, Any]:
    """What the review item of a held form says: the application it names, who sent it, how to resolve it."""
    references = [reference_of(session, key) for key in conflict.earlier_keys]
    return {
        "conflict_with": conflict.application_key,
        "conflict_references": [r for r in references if r],
        "new_sender": conflict.sender,
        "addresses_on_record": list(conflict.on_record),
        "to_resolve": "mailbot queue confirm ID (apply the form) or mailbot queue reject ID",
    }
