"""The decision on one message of a call: which of the nine outcomes, why, and what it refers to.

Pure: it sees what was read from the message, when it arrived, the call's rules and the call's earlier
applications, and returns a :class:`Decision` that names its rule, explains itself in one sentence and
records the values it matched on. The precedence is the corpus README's: ignored, correspondence,
no_attachment, unreadable, late, accepted/incomplete, revision, duplicate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from mailbot.classify import (
    cloud_link,
    is_question,
    machine_generated,
    machine_looking,
    mentions_submission,
    replies_to_us,
    says_it_replaces,
)
from mailbot.config import CallSettings, Eligibility
from mailbot.identity import SIMILAR_TITLE_SCORE, Identity, identity_of, match_reason, title_similarity
from parsers.model import FormReading, Submission
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
    rule: str  # short code of the rule that decided
    explanation: str  # one sentence an admin understands, naming the matched values
    matched: dict[str, str] = field(default_factory=dict)
    supersedes: str | None = None  # message_key of the form this revision replaces
    duplicate_of: str | None = None  # message_key of the first message of the person's existing application
    missing: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    identity: Identity | None = None
    application_key: str | None = None  # for application outcomes; its own message_key when new


# ---------------------------------------------------------------------------------------------- eligibility

_DOCTORATE = re.compile(r"博士|ph\.?\s?d|doctor|d\.?\s?phil|doctorate", re.IGNORECASE)
_FACULTY = re.compile(
    r"教授|讲师|研究员|高级工程师|教授级高工|高工|professor|lecturer|researcher|research\s+fellow"
    r"|scientist|senior\s+engineer|principal\s+investigator|faculty",
    re.IGNORECASE,
)

_NOT_YET_FACULTY = re.compile(r"博士后|研究生|学生|post-?doc|student|candidate", re.IGNORECASE)


def _text(values: Mapping[str, object], name: str) -> str:
    value = values.get(name)
    return value.strip() if isinstance(value, str) else ""


def eligibility_flags(values: Mapping[str, object], eligibility: Eligibility) -> tuple[str, ...]:
    """What a coordinator should check about eligibility; it never changes the outcome."""
    if eligibility == "phd":
        degree = _text(values, "degree")
        if not degree:
            return ("eligibility:degree-unknown",)
        return () if _DOCTORATE.search(degree) else ("eligibility:no-phd",)
    if eligibility == "faculty":
        title = _text(values, "title")
        if not title:
            return ("eligibility:title-unknown",)
        on_staff = _FACULTY.search(title) and not _NOT_YET_FACULTY.search(title)
        return () if on_staff else ("eligibility:not-faculty",)
    return ()


# ---------------------------------------------------------------------------------------------- helpers


def _when(moment: datetime, rules: CallRules) -> str:
    """An instant in the deadline's own offset, as admins read it."""
    offset = rules.deadline.tzinfo
    return moment.astimezone(offset).isoformat(sep=" ")


def _describe_sender(sub: Submission) -> str:
    env = sub.envelope
    return f"{env.from_name} <{env.from_addr}>" if env.from_name else env.from_addr or "an unknown sender"


def _sender_identity(sub: Submission, rules: CallRules) -> Identity:
    env = sub.envelope
    return identity_of(
        {"email": env.from_addr, "applicant_name": env.from_name}, env.from_addr, rules.institution_aliases
    )


def _form_values(form: FormReading) -> dict[str, object]:
    return dict(form.values())


def _form_matched(values: Mapping[str, object]) -> dict[str, str]:
    shown = ("applicant_name", "institution", "email", "phone", "project_title", "topic", _CUT)
    return {name: str(values[name]) for name in shown if values.get(name) not in (None, "")}


_CUT = "values_cut"  # what the reader cut at a value's length cap, stated beside the values


# ------------------------------------------------------------------------------ no readable form


def _without_form(
    sub: Submission,
    rules: CallRules,
    is_our_message_id: Callable[[str], bool],
) -> Decision:
    env = sub.envelope
    sender = _describe_sender(sub)
    identity = _sender_identity(sub, rules)
    base = {"from": env.from_addr, "subject": env.subject}
    machine = machine_looking(env)
    if machine:
        return Decision(
            Outcome.IGNORED,
            machine,
            f"Ignored: no form is attached and the message reads as a machine's ({machine}, subject {env.subject!r}).",
            base,
        )
    reply = replies_to_us(env, is_our_message_id, (rules.reference_prefix,))
    if mentions_submission(env, replying=reply is not None):
        # also in a reply: "the corrected form is attached" with nothing attached deserves an answer
        shares_link = cloud_link(env)
        how = "shares a cloud-drive link instead of attaching" if shares_link else "says it is attached, but"
        return Decision(
            Outcome.NO_ATTACHMENT,
            "cloud-link" if shares_link else "forgotten-attachment",
            f"No attachment: {sender} {how} no form is" + (" (replying to the fund)." if reply else "."),
            {**base, **({"reply": reply} if reply else {})},
            flags=("cloud-link",) if shares_link else (),
            identity=identity,
        )
    if reply:
        return Decision(
            Outcome.CORRESPONDENCE,
            "reply-to-us",
            f"Correspondence: {sender} answers one of the fund's messages ({reply}) without a form.",
            {**base, "reply": reply},
            identity=identity,
        )
    asks = is_question(env)
    what = "asks a question" if asks else "wrote"
    return Decision(
        Outcome.CORRESPONDENCE,
        "question" if asks else "message-without-form",
        f"Correspondence: {sender} {what} without a form and without meaning to submit one (subject {env.subject!r}).",
        base,
        identity=identity,
    )


# ---------------------------------------------------------------------------------------------- applications


def _applications(
    priors: Sequence[tuple[PriorApplication, str]],
) -> dict[str, list[tuple[PriorApplication, str]]]:
    """The person's earlier messages grouped by application, in the order the applications began."""
    grouped: dict[str, list[tuple[PriorApplication, str]]] = {}
    for prior, reason in sorted(priors, key=lambda item: item[0].arrival):
        grouped.setdefault(prior.application_key, []).append((prior, reason))
    return dict(sorted(grouped.items(), key=lambda item: item[1][0][0].arrival))


def _best_title_score(title: str | None, application: Sequence[tuple[PriorApplication, str]]) -> float:
    return max(title_similarity(title, prior.project_title) for prior, _ in application)


@dataclass(frozen=True)
class _Context:
    """What every application outcome records."""

    message_key: str
    identity: Identity
    values: Mapping[str, object]
    missing: tuple[str, ...]
    flags: tuple[str, ...]


def _revision(
    ctx: _Context,
    application_key: str,
    application: Sequence[tuple[PriorApplication, str]],
    rule: str,
    why: str,
) -> Decision:
    latest, reason = application[-1]  # applications are in arrival order, ties in the order decided
    matched = {
        **_form_matched(ctx.values),
        "same_person_by": reason,
        "supersedes": latest.message_key,
        "application": application_key,
    }
    if latest.project_title:
        matched["earlier_title"] = latest.project_title
    flags = ctx.flags + (("still-incomplete",) if ctx.missing else ())
    return Decision(
        Outcome.REVISION,
        rule,
        f"Revision: the same applicant ({reason}) sent a new form for the same project ({why}); "
        f"it replaces {latest.message_key}" + (f" and still lacks {', '.join(ctx.missing)}." if ctx.missing else "."),
        matched,
        supersedes=latest.message_key,
        missing=ctx.missing,
        flags=flags,
        identity=ctx.identity,
        application_key=application_key,
    )


def _first_form(ctx: _Context) -> Decision:
    values = ctx.values
    title = values.get("project_title") or "(no title)"
    if ctx.missing:
        return Decision(
            Outcome.INCOMPLETE,
            "first-form-incomplete",
            f"Incomplete: first form of this applicant ({title!s}), missing {', '.join(ctx.missing)}.",
            _form_matched(values),
            missing=ctx.missing,
            flags=ctx.flags,
            identity=ctx.identity,
            application_key=ctx.message_key,
        )
    return Decision(
        Outcome.ACCEPTED,
        "first-form",
        f"Accepted: first readable form of {values.get('applicant_name')!s} ({values.get('institution')!s}) "
        f"for {title!s}.",
        _form_matched(values),
        flags=ctx.flags,
        identity=ctx.identity,
        application_key=ctx.message_key,
    )


def _judge_application(
    sub: Submission, form: FormReading, ctx: _Context, priors: Sequence[PriorApplication]
) -> Decision:
    same_file = [p for p in priors if form.sha256 and p.form_sha256 == form.sha256]
    # the same filled-in file is the same submission; two people may both send the blank template
    if same_file and (ctx.identity.name_key or ctx.identity.email or ctx.identity.phone):
        application_key = max(same_file, key=lambda p: p.arrival).application_key
        application = _applications([(p, "same-file") for p in priors])[application_key]
        return _revision(ctx, application_key, application, "same-file", "the very same form file was sent again")

    mine = [(p, reason) for p in priors if (reason := match_reason(p.identity, ctx.identity))]
    if not mine:
        return _first_form(ctx)
    applications = _applications(mine)
    title = ctx.values.get("project_title")
    title_text = title if isinstance(title, str) else None
    scores = {key: _best_title_score(title_text, app) for key, app in applications.items()}
    best_key = max(scores, key=lambda key: scores[key])
    if scores[best_key] >= SIMILAR_TITLE_SCORE:
        return _revision(
            ctx,
            best_key,
            applications[best_key],
            "same-title",
            f"title similarity {scores[best_key]:.0f}%",
        )
    untitled = [key for key, app in applications.items() if not any(p.project_title for p, _ in app)]
    if not title_text or untitled:
        key = untitled[-1] if untitled else list(applications)[-1]
        return _revision(
            ctx, key, applications[key], "untitled", "one of the two forms has no title to tell them apart"
        )
    if says_it_replaces(sub.envelope):
        chosen = best_key if scores[best_key] > 0 else list(applications)[-1]
        return _revision(
            ctx, chosen, applications[chosen], "says-replaces", "the mail says it replaces the earlier form"
        )

    first_key = next(iter(applications))
    first, reason = applications[first_key][0]
    matched = {
        **_form_matched(ctx.values),
        "same_person_by": reason,
        "duplicate_of": first_key,
        "earlier_title": first.project_title or "",
        "title_similarity": f"{scores[best_key]:.0f}",
    }
    return Decision(
        Outcome.DUPLICATE,
        "different-project",
        f"Duplicate: the same applicant ({reason}) already applied with {first.project_title!r} "
        f"({first_key}); this form is for a different project, {title_text!r}.",
        matched,
        duplicate_of=first_key,
        missing=ctx.missing,
        flags=ctx.flags,
        identity=ctx.identity,
        application_key=ctx.message_key,
    )


# ---------------------------------------------------------------------------------------------- entry point


def decide(
    sub: Submission,
    message_key: str,
    arrival: datetime,
    rules: CallRules,
    priors: Sequence[PriorApplication],
    is_our_message_id: Callable[[str], bool],
    identity: Identity | None = None,
) -> Decision:
    """The outcome of one message; ``priors`` are the call's earlier application messages (any order).

    ``identity``: the form's, when the caller has computed it already (it is the costly part).
    """
    if arrival.tzinfo is None or arrival.utcoffset() is None:
        raise ValueError("arrival must be an aware datetime (the server's INTERNALDATE)")
    env = sub.envelope
    machine = machine_generated(env, rules.own_addresses)
    if machine:
        return Decision(
            Outcome.IGNORED,
            machine,
            f"Ignored: machine-generated mail ({machine}) from {env.from_addr or 'an empty sender'}.",
            {"from": env.from_addr, "subject": env.subject, "signal": machine},
        )
    if sub.form is None and sub.unreadable is None:
        return _without_form(sub, rules, is_our_message_id)
    if sub.form is None:
        assert sub.unreadable is not None
        unreadable = sub.unreadable
        return Decision(
            Outcome.UNREADABLE,
            f"unreadable:{unreadable.reason}",
            f"Unreadable: the form {unreadable.attachment!r} from {_describe_sender(sub)} cannot be read "
            f"({unreadable.reason}).",
            {"attachment": unreadable.attachment, "reason": unreadable.reason},
            identity=_sender_identity(sub, rules),
        )

    form = sub.form
    values = _form_values(form)
    if identity is None:
        identity = identity_of(values, env.from_addr, rules.institution_aliases)
    flags = eligibility_flags(values, rules.eligibility)
    if form.cut:
        flags += ("value-cut",)
    if arrival < rules.opens:
        flags += ("before-opening",)
    if sub.other_forms:
        flags += ("several-forms",)
    missing = rules.spec.missing(values)
    if form.cut:
        values = {**values, _CUT: "; ".join(form.cut)}
    if arrival >= rules.deadline:
        earlier = sorted((p for p in priors if match_reason(p.identity, identity)), key=lambda p: p.arrival)
        matched = {
            **_form_matched(values),
            "arrival": _when(arrival, rules),
            "deadline": _when(rules.deadline, rules),
        }
        if earlier:
            matched["earlier_application"] = earlier[0].application_key
        matched.update(_forwarding(sub))
        return Decision(
            Outcome.LATE,
            "late",
            f"Late: arrived {_when(arrival, rules)}, at or after the deadline {_when(rules.deadline, rules)} "
            "(judged on arrival, not on the Date: header).",
            matched,
            missing=missing,
            flags=flags,
            identity=identity,
        )
    ctx = _Context(message_key, identity, values, missing, flags)
    decision = _judge_application(sub, form, ctx, priors)
    forwarded = _forwarding(sub)
    return replace(decision, matched={**decision.matched, **forwarded}) if forwarded else decision


def _forwarding(sub: Submission) -> dict[str, str]:
    """Who forwarded the form (a secretary for a professor): the form names the applicant, this is the record."""
    if not sub.forwarded_by:
        return {}
    return {"forwarded_by": sub.forwarded_by, **({"forwarded_from": sub.forwarded_from} if sub.forwarded_from else {})}
