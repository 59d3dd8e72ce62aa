"""The decision as one declared sequence of named rules, tried in order until one decides.

Each :class:`Rule` has a name, a one-line description, the kinds of reading it applies to (a
message with a readable form, one whose form could not be read, one without a form) and a check
that returns a :class:`~mailbot.decision.Decision` or None. :data:`DECISION_RULES` is the order;
:func:`mailbot.decide.decide` walks it and records which rules were tried and which decided, as
GNU Mailman's chains record ``rule_hits`` and ``rule_misses``. The precedence is the corpus
README's: ignored, correspondence, no_attachment, unreadable, late, accepted/incomplete, revision,
duplicate.

The leading rules marked ``envelope_only`` read nothing but the header block, so the pipeline runs
them before the parser pool (:func:`mailbot.decide.envelope_verdict`): a machine's mail is
decided without its attachments being read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import Literal

from mailbot.classify import (
    cloud_link,
    is_question,
    machine_generated,
    machine_looking,
    mentions_submission,
    says_it_replaces,
)
from mailbot.decision import Decision, Outcome
from mailbot.facts import Application, Facts, grouped_by_application
from mailbot.identity import SIMILAR_TITLE_SCORE, match_reason

Reading = Literal["form", "unreadable", "no_form"]  # parsers.model.Submission.status
ANY_READING: frozenset[Reading] = frozenset({"form", "unreadable", "no_form"})
NO_FORM: frozenset[Reading] = frozenset({"no_form"})
UNREADABLE: frozenset[Reading] = frozenset({"unreadable"})
FORM: frozenset[Reading] = frozenset({"form"})


@dataclass(frozen=True)
class Rule:
    """One step of the decision: its check decides the message, or passes it on to the next rule."""

    name: str
    description: str
    applies_to: frozenset[Reading]
    check: Callable[[Facts], Decision | None]
    envelope_only: bool = False  # the check reads the header block alone (no body, no attachment)


def _when(moment: datetime, facts: Facts) -> str:
    """An instant in the deadline's own offset, as admins read it."""
    return moment.astimezone(facts.call.deadline.tzinfo).isoformat(sep=" ")


def _base(facts: Facts) -> dict[str, str]:
    return {"from": facts.envelope.from_addr, "subject": facts.envelope.subject}


# ---------------------------------------------------------------------------------------------- any message


def machine(facts: Facts) -> Decision | None:
    env = facts.envelope
    signal = machine_generated(env, facts.call.own_addresses)
    if signal is None:
        return None
    return Decision(
        Outcome.IGNORED,
        signal,
        f"Ignored: machine-generated mail ({signal}) from {env.from_addr or 'an empty sender'}.",
        {**_base(facts), "signal": signal},
    )


# ---------------------------------------------------------------------------------------------- no form


def machine_looking_without_form(facts: Facts) -> Decision | None:
    signal = machine_looking(facts.envelope)
    if signal is None:
        return None
    return Decision(
        Outcome.IGNORED,
        signal,
        f"Ignored: no form is attached and the message reads as a machine's ({signal}, "
        f"subject {facts.envelope.subject!r}).",
        _base(facts),
    )


def missing_attachment(facts: Facts) -> Decision | None:
    # also in a reply: "the corrected form is attached" with nothing attached deserves an answer
    reply = facts.reply
    if not mentions_submission(facts.envelope, replying=reply is not None):
        return None
    shares_link = cloud_link(facts.envelope)
    how = "shares a cloud-drive link instead of attaching" if shares_link else "says it is attached, but"
    return Decision(
        Outcome.NO_ATTACHMENT,
        "cloud-link" if shares_link else "forgotten-attachment",
        f"No attachment: {facts.sender} {how} no form is" + (" (replying to the fund)." if reply else "."),
        {**_base(facts), **({"reply": reply} if reply else {})},
        flags=("cloud-link",) if shares_link else (),
        identity=facts.sender_identity,
    )


def reply_to_us(facts: Facts) -> Decision | None:
    reply = facts.reply
    if reply is None:
        return None
    return Decision(
        Outcome.CORRESPONDENCE,
        "reply-to-us",
        f"Correspondence: {facts.sender} answers one of the fund's messages ({reply}) without a form.",
        {**_base(facts), "reply": reply},
        identity=facts.sender_identity,
    )


def correspondence(facts: Facts) -> Decision:
    asks = is_question(facts.envelope)
    what = "asks a question" if asks else "wrote"
    return Decision(
        Outcome.CORRESPONDENCE,
        "question" if asks else "message-without-form",
        f"Correspondence: {facts.sender} {what} without a form and without meaning to submit one "
        f"(subject {facts.envelope.subject!r}).",
        _base(facts),
        identity=facts.sender_identity,
    )


# ---------------------------------------------------------------------------------------------- unreadable


def unreadable(facts: Facts) -> Decision:
    found = facts.sub.unreadable
    assert found is not None
    return Decision(
        Outcome.UNREADABLE,
        f"unreadable:{found.reason}",
        f"Unreadable: the form {found.attachment!r} from {facts.sender} cannot be read ({found.reason}).",
        {"attachment": found.attachment, "reason": found.reason},
        identity=facts.sender_identity,
    )


# ---------------------------------------------------------------------------------------------- a readable form


def late(facts: Facts) -> Decision | None:
    arrival, deadline = facts.arrival, facts.call.deadline
    if arrival < deadline:
        return None
    earlier = sorted((p for p in facts.priors if match_reason(p.identity, facts.identity)), key=lambda p: p.arrival)
    matched = {**facts.form_matched, "arrival": _when(arrival, facts), "deadline": _when(deadline, facts)}
    if earlier:
        matched["earlier_application"] = earlier[0].application_key
    matched.update(facts.forwarding)
    return Decision(
        Outcome.LATE,
        "late",
        f"Late: arrived {_when(arrival, facts)}, at or after the deadline {_when(deadline, facts)} "
        "(judged on arrival, not on the Date: header).",
        matched,
        missing=facts.missing,
        flags=facts.flags,
        identity=facts.identity,
    )


def _revision(facts: Facts, application_key: str, application: Application, rule: str, why: str) -> Decision:
    latest, reason = application[-1]  # applications are in arrival order, ties in the order decided
    matched = {
        **facts.form_matched,
        "same_person_by": reason,
        "supersedes": latest.message_key,
        "application": application_key,
    }
    if latest.project_title:
        matched["earlier_title"] = latest.project_title
    matched.update(facts.forwarding)
    missing = facts.missing
    return Decision(
        Outcome.REVISION,
        rule,
        f"Revision: the same applicant ({reason}) sent a new form for the same project ({why}); "
        f"it replaces {latest.message_key}" + (f" and still lacks {', '.join(missing)}." if missing else "."),
        matched,
        supersedes=latest.message_key,
        missing=missing,
        flags=facts.flags + (("still-incomplete",) if missing else ()),
        identity=facts.identity,
        application_key=application_key,
    )


def same_file(facts: Facts) -> Decision | None:
    sha256 = facts.form.sha256
    same = [p for p in facts.priors if sha256 and p.form_sha256 == sha256]
    identity = facts.identity
    # the same filled-in file is the same submission; two people may both send the blank template
    if not same or not (identity.name_key or identity.email or identity.phone):
        return None
    application_key = max(same, key=lambda p: p.arrival).application_key
    application = grouped_by_application([(p, "same-file") for p in facts.priors])[application_key]
    return _revision(facts, application_key, application, "same-file", "the very same form file was sent again")


def first_form(facts: Facts) -> Decision | None:
    if facts.applications:
        return None
    values, missing = facts.values, facts.missing
    title = values.get("project_title") or "(no title)"
    if missing:
        return Decision(
            Outcome.INCOMPLETE,
            "first-form-incomplete",
            f"Incomplete: first form of this applicant ({title!s}), missing {', '.join(missing)}.",
            {**facts.form_matched, **facts.forwarding},
            missing=missing,
            flags=facts.flags,
            identity=facts.identity,
            application_key=facts.message_key,
        )
    return Decision(
        Outcome.ACCEPTED,
        "first-form",
        f"Accepted: first readable form of {values.get('applicant_name')!s} ({values.get('institution')!s}) "
        f"for {title!s}.",
        {**facts.form_matched, **facts.forwarding},
        flags=facts.flags,
        identity=facts.identity,
        application_key=facts.message_key,
    )


def same_title(facts: Facts) -> Decision | None:
    key = facts.closest_application
    score = facts.title_scores[key]
    if score < SIMILAR_TITLE_SCORE:
        return None
    return _revision(facts, key, facts.applications[key], "same-title", f"title similarity {score:.0f}%")


def untitled(facts: Facts) -> Decision | None:
    applications = facts.applications
    without_title = [key for key, app in applications.items() if not any(p.project_title for p, _ in app)]
    if facts.title and not without_title:
        return None
    key = without_title[-1] if without_title else list(applications)[-1]
    why = "one of the two forms has no title to tell them apart"
    return _revision(facts, key, applications[key], "untitled", why)


def says_replaces(facts: Facts) -> Decision | None:
    if not says_it_replaces(facts.envelope):
        return None
    closest = facts.closest_application
    key = closest if facts.title_scores[closest] > 0 else list(facts.applications)[-1]
    why = "the mail says it replaces the earlier form"
    return _revision(facts, key, facts.applications[key], "says-replaces", why)


def different_project(facts: Facts) -> Decision:
    first_key = next(iter(facts.applications))
    first, reason = facts.applications[first_key][0]
    matched = {
        **facts.form_matched,
        "same_person_by": reason,
        "duplicate_of": first_key,
        "earlier_title": first.project_title or "",
        "title_similarity": f"{facts.title_scores[facts.closest_application]:.0f}",
        **facts.forwarding,
    }
    return Decision(
        Outcome.DUPLICATE,
        "different-project",
        f"Duplicate: the same applicant ({reason}) already applied with {first.project_title!r} "
        f"({first_key}); this form is for a different project, {facts.title!r}.",
        matched,
        duplicate_of=first_key,
        missing=facts.missing,
        flags=facts.flags,
        identity=facts.identity,
        application_key=facts.message_key,
    )


# ---------------------------------------------------------------------------------------------- the order

# The order is the precedence: each rule may rely on every earlier one having passed (from
# same-title on, the person has an earlier application, or first-form would have decided).
DECISION_RULES: tuple[Rule, ...] = (
    Rule(
        "machine",
        "a signal only machines send: Auto-Submitted, bulk Precedence, list headers, a report, "
        "a null or daemon sender, our own address",
        ANY_READING,
        machine,
        envelope_only=True,
    ),
    Rule(
        "machine-looking",
        "no form, and an auto-reply or bounce subject, a bounce text or no sender at all",
        NO_FORM,
        machine_looking_without_form,
    ),
    Rule(
        "missing-attachment",
        "no form, but the sender means to submit one (says it is attached, shares a link)",
        NO_FORM,
        missing_attachment,
    ),
    Rule("reply-to-us", "no form, and it answers one of the fund's messages", NO_FORM, reply_to_us),
    Rule("correspondence", "no form and no meaning to submit one: a question or a note", NO_FORM, correspondence),
    Rule("unreadable", "the form is there but cannot be read", UNREADABLE, unreadable),
    Rule("late", "the form arrived at or after the deadline (grace included)", FORM, late),
    Rule("same-file", "the very same filled-in file came before: a revision of its application", FORM, same_file),
    Rule("first-form", "no earlier form names the same person: a new application", FORM, first_form),
    Rule("same-title", "the person's earlier application has a similar title: a revision", FORM, same_title),
    Rule("untitled", "a title is missing on one side, so the forms cannot be told apart: a revision", FORM, untitled),
    Rule("says-replaces", "the mail says this form replaces the earlier one: a revision", FORM, says_replaces),
    Rule("different-project", "the person already applied for another project: a duplicate", FORM, different_project),
)
# the rules the pipeline tries on the header block before reading: the leading envelope-only ones,
# since a rule may only decide once every rule before it has passed
ENVELOPE_RULES: tuple[Rule, ...] = tuple(takewhile(lambda rule: rule.envelope_only, DECISION_RULES))
