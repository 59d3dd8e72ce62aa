"""What a decision is: the nine outcomes, what the call's rules and earlier applications are, and the record.

:func:`mailbot.decide.decide` makes a :class:`Decision` by walking the named rules of
:mod:`mailbot.rules`; everything here is plain data, stored as the message's decision record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mailbot.config import CallSettings, Eligibility
from mailbot.identity import Identity
from parsers.spec import FormSpec


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    INCOMPLETE = "incomplete"
    LATE = "late"
    REVISION = "revision"
    DUPLICATE = "duplicate"
    NO_ATTACHMENT = "no_attachment"
    UNREADABLE = "unreadable"
    CORRESPONDENCE = "correspondence"
    IGNORED = "ignored"


ANSWERED: frozenset[Outcome] = frozenset(set(Outcome) - {Outcome.IGNORED, Outcome.CORRESPONDENCE})
APPLICATION_OUTCOMES: frozenset[Outcome] = frozenset(
    {Outcome.ACCEPTED, Outcome.INCOMPLETE, Outcome.REVISION, Outcome.DUPLICATE}
)


@dataclass(frozen=True)
class CallRules:
    call_id: str
    opens: datetime
    deadline: datetime  # effective: arrival at or after it is late (grace included)
    eligibility: Eligibility
    own_addresses: frozenset[str]
    reference_prefix: str
    institution_aliases: Mapping[str, str]
    spec: FormSpec

    @classmethod
    def from_settings(cls, call: CallSettings, own_addresses: frozenset[str]) -> CallRules:
        return cls(
            call_id=call.id,
            opens=call.opens,
            deadline=call.effective_deadline,
            eligibility=call.eligibility,
            own_addresses=frozenset(a.lower() for a in own_addresses),
            reference_prefix=call.reference_prefix,
            institution_aliases=dict(call.institution_aliases),
            spec=call.form_spec,
        )


@dataclass(frozen=True)
class PriorApplication:
    """An earlier message of the same call whose outcome was accepted, incomplete, revision or duplicate."""

    message_key: str
    arrival: datetime
    outcome: Outcome
    identity: Identity
    project_title: str | None
    form_sha256: str | None
    application_key: str  # message_key of the first message of the application it belongs to
    reference: str | None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule: str  # the deciding rule's reason code (auto-submitted:auto-replied, reply-to-us, same-title …)
    explanation: str  # one sentence an admin understands, naming the matched values
    matched: dict[str, str] = field(default_factory=dict)
    supersedes: str | None = None  # message_key of the form this revision replaces
    duplicate_of: str | None = None  # message_key of the first message of the person's existing application
    missing: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    identity: Identity | None = None
    application_key: str | None = None  # for application outcomes; its own message_key when new
    # the named rules (mailbot.rules) that decided and that were tried before it, in their order:
    # the record says why no earlier rule applied, not only which one did
    rule_hits: tuple[str, ...] = ()
    rule_misses: tuple[str, ...] = ()
