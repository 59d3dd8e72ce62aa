"""``mailbot queue`` actions: what admins do with messages the bot could not finish.

retry (with today's readers and configuration), confirm (a form held as an identity conflict),
resolve (an admin types the fields; they flow on like a parsed form), correct (a logged revision of
typed fields), reject (close it, optionally telling the applicant). Every action is recorded in the
event log with who did it; an item leaves the queue only to a final outcome, and nothing is deleted.
"""

from __future__ import annotations

import sys

from mailbot.admin.context import ReviewDesk
from mailbot.admin.queue_typing import Plan, check_required, plan_typing
from mailbot.admin.queue_view import QueueError, held_reason
from mailbot.clock import utcnow
from mailbot.deciding import Processed
from mailbot.effects import add_closed_effect
from parsers.model import to_jsonable
from storage.effects import DueEffect
from storage.events import EventKind, add_event
from storage.models import Message, MessageState
from storage.review_items import close_as_rejected, count_answer_attempt, store_corrected_form


def _note_admin_action(
    desk: ReviewDesk, pk: int, kind: EventKind, result: Processed, actor: str, **detail: object
) -> None:
    """Record who retried, confirmed or resolved an item, and mark its folder closed if it left the queue."""
    closing: DueEffect | None = None
    with desk.store.sessions() as session, session.begin():
        message = session.get_one(Message, pk)
        add_event(session, kind, actor, pk, outcome=result.outcome, **detail)
        if message.state != MessageState.REVIEW:
            closing = add_closed_effect(session, pk, result.outcome, actor, desk.pipeline.worker)
    if closing is not None:
        desk.pipeline.decider.effects.run_claimed([closing])


def _retry_one(desk: ReviewDesk, pk: int, actor: str, call_id: str | None = None) -> Processed | str:
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW:
            return f"{message.reference or pk}: not in the review queue (it is {message.state})"
    try:
        result = desk.pipeline.reprocess(pk, actor=actor, call_id=call_id)
    except Exception as exc:  # the item stays in the queue; say why and go on with the next
        return f"{pk}: still in the queue: {exc.__class__.__name__}: {exc}"
    _note_admin_action(desk, pk, EventKind.QUEUE_RETRIED, result, actor, reference=result.reference)
    return result


def confirm_item(desk: ReviewDesk, pk: int, actor: str) -> Processed:
    """Apply a form held as an identity conflict: its sender is confirmed to speak for the applicant."""
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW or held_reason(message) is None:
            raise QueueError(f"{message.reference or pk} is not held as an identity conflict")
    result = desk.pipeline.reprocess(pk, actor=actor, confirmed=True)
    _note_admin_action(desk, pk, EventKind.QUEUE_CONFIRMED, result, actor, reference=result.reference)
    return result


def retry_items(desk: ReviewDesk, pks: list[int], actor: str, call_id: str | None = None) -> list[Processed | str]:
    if call_id is not None and call_id not in {call.id for call in desk.settings.call}:
        raise QueueError(f"no call {call_id!r} in the configuration")
    results: list[Processed | str] = []
    for index, pk in enumerate(pks, start=1):
        results.append(_retry_one(desk, pk, actor, call_id))
        if len(pks) > 1:
            print(f"\r[{index}/{len(pks)}] retried", end="", file=sys.stderr, flush=True)
    if len(pks) > 1:
        print(file=sys.stderr)
    desk.send()
    return results


def resolve_item(
    desk: ReviewDesk, pk: int, assignments: list[str], actor: str, allow_missing: bool = True
) -> Processed:
    plan = plan_typing(desk, pk, assignments, correcting=False, answer=True)
    check_required(plan, allow_missing)
    return carry_out_resolve(desk, plan, actor)


def carry_out_resolve(desk: ReviewDesk, plan: Plan, actor: str) -> Processed:
    result = desk.pipeline.reprocess(plan.pk, plan.submission, actor=actor)
    _note_admin_action(desk, plan.pk, EventKind.QUEUE_RESOLVED, result, actor, fields=plan.typed)
    desk.send()
    return result


def carry_out_correction(desk: ReviewDesk, plan: Plan, actor: str) -> str:
    """Store corrected fields as a revision of the application: logged, and answered only when asked."""
    form = plan.submission.form
    assert form is not None
    values = to_jsonable(form.values())
    reading = to_jsonable(plan.submission)
    with desk.store.sessions() as session, session.begin():
        message = session.get_one(Message, plan.pk, with_for_update=True)
        missing, explanation = plan.decision.missing, plan.decision.explanation
        changed = store_corrected_form(session, message, values, missing, explanation, reading, utcnow())
        add_event(
            session, EventKind.QUEUE_CORRECTED, actor, plan.pk, fields=plan.typed, changed=changed, answered=plan.answer
        )
        if plan.answer:
            count_answer_attempt(session, message)
            desk.pipeline.decider.outbox.answer_again(session, message, plan.decision, plan.submission)
    if plan.answer:
        desk.send()
    return f"corrected {plan.reference or plan.pk}: {len(changed)} field(s) changed" + (
        "; the applicant was sent a new answer" if plan.answer else "; no answer was sent"
    )


def reject_item(desk: ReviewDesk, pk: int, reason: str, notify: bool, actor: str) -> str:
    with desk.store.sessions() as session, session.begin():
        message = session.get_one(Message, pk, with_for_update=True)
        if message.state != MessageState.REVIEW:
            raise QueueError(f"{message.reference or pk} is not in the review queue")
        close_as_rejected(message, f"closed by {actor}: {reason}")
        add_event(session, EventKind.QUEUE_REJECTED, actor, pk, reason=reason, notify=notify)
        told = notify and desk.pipeline.decider.outbox.closed_notice(session, message, reason)
        closing = add_closed_effect(session, pk, f"rejected: {reason}", actor, desk.pipeline.worker)
    # only once the rejection is committed: a failure before leaves the item open, folder and all
    desk.pipeline.decider.effects.run_claimed([closing])
    if told:
        desk.send()
        return f"closed {pk} and told the applicant"
    if notify:
        return f"closed {pk}; nobody was told: the sender's address cannot be answered"
    return f"closed {pk}"
