"""Fields an admin types in for a form the bot could not read (``queue resolve``) or corrects later.

The typed values become a :class:`Plan`: the submission as if the form had said them, and the
decision the rules would make for it, shown to the admin before anything is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailbot.acknowledge import valid_address
from mailbot.admin.context import ReviewDesk
from mailbot.admin.queue_view import QueueError, field_labels
from mailbot.config import Settings
from mailbot.decide import decide
from mailbot.decision import ANSWERED, Decision
from mailbot.identity import identity_of
from mailbot.priors import load_priors
from parsers import read_message
from parsers.model import FieldValue, FormReading, Location, Submission
from parsers.values import normalise
from storage.models import Message, MessageState
from storage.review_items import typed_in_fields

# What an applicant reads as the source of typed-in values: never an admin's login name.
ENTERED_BY_OFFICE = "由基金项目组录入 / entered by the fund office"


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    typed: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise QueueError(f"--field takes NAME=VALUE, not {item!r}")
        typed[name.strip()] = value.strip()
    return typed


def typed_submission(settings: Settings, raw: bytes, call_id: str, typed: dict[str, str]) -> Submission:
    """The message as the bot read it, with the form replaced by what an admin typed."""
    spec = settings.call_by_id(call_id).form_spec
    known = {f.name: f for f in spec.fields}
    unknown = sorted(set(typed) - set(known))
    if unknown:
        raise QueueError(f"unknown field(s) {', '.join(unknown)}; this call's fields: {', '.join(known)}")
    where = Location(file=ENTERED_BY_OFFICE)
    fields = {
        name: FieldValue(normalise(known[name].kind, text, spec)[0], text, 1.0, where) for name, text in typed.items()
    }
    values = {name: fv.value for name, fv in fields.items()}
    form = FormReading(
        attachment=where.file, sha256="", kind="other", fields=fields, missing=spec.missing(values), score=1.0
    )
    submission = read_message(raw, spec)
    return replace(submission, form=form, unreadable=None)


@dataclass(frozen=True)
class Plan:
    """What resolving or correcting an item would do, shown to the admin before it is done."""

    pk: int
    reference: str | None
    call_id: str
    typed: dict[str, str]
    submission: Submission
    decision: Decision
    recipient: str | None
    answer: bool  # whether the applicant would be sent an answer


def _predict(desk: ReviewDesk, pk: int, submission: Submission) -> Decision:
    """The decision the rules would make for ``submission``, read-only (the same inputs as the pipeline's)."""
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        call = desk.settings.call_by_id(message.call_id or desk.settings.call[0].id)
        rules = desk.pipeline.decider.rules[call.id]
        form = submission.form
        probe = (
            identity_of(dict(form.values()), submission.envelope.from_addr, rules.institution_aliases) if form else None
        )
        priors = load_priors(session, call.id, message.arrival, pk, probe, form.sha256 if form else None)
        # the same test of "a reply to one of our answers" as the pipeline's, so the preview matches
        ours = desk.pipeline.decider.ours_among(session, submission.envelope)
        return decide(submission, message.message_key, message.arrival, rules, priors, ours)


def plan_typing(desk: ReviewDesk, pk: int, assignments: list[str], correcting: bool, answer: bool) -> Plan:
    typed = parse_assignments(assignments)
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if correcting:
            if message.state == MessageState.REVIEW:
                raise QueueError(f"{message.reference or pk} is still in the review queue: use `queue resolve`")
            typed_before = typed_in_fields(session, pk)
            typed = {**typed_before, **typed}
            if not typed_before:
                raise QueueError(
                    f"{message.reference or pk} was not resolved by hand; only typed-in fields are corrected"
                )
        elif message.state != MessageState.REVIEW:
            raise QueueError(
                f"{message.reference or pk} is not in the review queue (it is {message.state}); "
                "to change what was typed in, use `queue correct`"
            )
        raw, call_id = desk.store.archive.get(message.sha256), message.call_id or desk.settings.call[0].id
        reference = message.reference
    submission = typed_submission(desk.settings, raw, call_id, typed)
    decision = _predict(desk, pk, submission)
    envelope = submission.envelope
    recipient = valid_address((envelope.reply_to[0] if envelope.reply_to else envelope.from_addr) or "")
    answers = decision.outcome in ANSWERED and (answer or not correcting)
    return Plan(pk, reference, call_id, typed, submission, decision, recipient, answers and recipient is not None)


def describe_plan(desk: ReviewDesk, plan: Plan, correcting: bool) -> str:
    labels = field_labels(desk.settings.call_by_id(plan.call_id).form_spec, desk.templates)
    return desk.templates.render(
        "queue/plan.txt.j2",
        {
            "plan": plan,
            "correcting": correcting,
            "labels": labels,
            "values": {
                name: fv.value for name, fv in (plan.submission.form.fields if plan.submission.form else {}).items()
            },
            "missing": [labels.get(name, name) for name in plan.decision.missing],
        },
    )


def check_required(plan: Plan, allow_missing: bool) -> None:
    if plan.decision.missing and not allow_missing:
        raise QueueError(
            f"required field(s) missing: {', '.join(plan.decision.missing)}; add them with --field NAME=VALUE, "
            "or pass --allow-missing to go ahead (the applicant is then told what is missing)"
        )
