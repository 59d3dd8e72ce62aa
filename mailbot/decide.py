"""The decision on one message of a call: which of the nine outcomes, why, and what it refers to.

Pure: it sees what was read from the message, when it arrived, the call's rules, the call's earlier
applications and which of the Message-IDs the message refers to are the fund's own, and returns a
:class:`~mailbot.decision.Decision` that names its rule, explains itself in one sentence, records
the values it matched on and which of the named rules (:data:`mailbot.rules.DECISION_RULES`) were
tried before the one that decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from mailbot.decision import CallRules, Decision, PriorApplication
from mailbot.facts import Facts
from mailbot.identity import Identity
from mailbot.rules import DECISION_RULES, ENVELOPE_RULES, Rule
from parsers.model import Envelope, Submission


def decide(
    sub: Submission,
    message_key: str,
    arrival: datetime,
    rules: CallRules,
    priors: Sequence[PriorApplication],
    ours: frozenset[str],
    identity: Identity | None = None,
) -> Decision:
    """The outcome of one message; ``priors`` are the call's earlier application messages (any order).

    ``ours``: which of the Message-IDs in its In-Reply-To and References the fund sent.
    ``identity``: the form's, when the caller has computed it already (it is the costly part).
    """
    if arrival.tzinfo is None or arrival.utcoffset() is None:
        raise ValueError("arrival must be an aware datetime (the server's INTERNALDATE)")
    facts = Facts(sub, message_key, arrival, rules, priors, ours, identity)
    decision = _first_hit(facts, DECISION_RULES)
    assert decision is not None, "the last rule for each kind of reading always decides"
    return decision


def envelope_verdict(envelope: Envelope, rules: CallRules) -> Decision | None:
    """The decision the header block alone already makes (a machine's mail), or None: read the message.

    Whatever the attachments hold, :func:`decide` on the full reading reaches the same decision,
    since these rules come first and read nothing else.
    """
    if envelope.content_type == "multipart/report":
        return None  # read in full: its body names the answers that bounced, which deciding records
    facts = Facts(Submission(envelope), "", rules.opens, rules, (), frozenset())
    return _first_hit(facts, ENVELOPE_RULES)


def _first_hit(facts: Facts, sequence: Sequence[Rule]) -> Decision | None:
    """Walks ``sequence`` for the message's kind of reading; the first rule that decides ends it."""
    reading = facts.sub.status
    tried: list[str] = []
    for rule in sequence:
        if reading not in rule.applies_to:
            continue
        decision = rule.check(facts)
        if decision is not None:
            return replace(decision, rule_hits=(rule.name,), rule_misses=tuple(tried))
        tried.append(rule.name)
    return None
