"""``mailbot queue``: what admins do with messages the bot could not finish.

list, show, retry (with today's readers and configuration), resolve (an admin types the fields;
they flow on like a parsed form), reject (close it, optionally telling the applicant). Every
action is recorded in the event log with who did it; an item leaves the queue only to a final
outcome, and nothing is deleted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.acknowledge import valid_address
from mailbot.admin_context import AdminContext, ReviewDesk
from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.decide import decide
from mailbot.decision import ANSWERED, Decision
from mailbot.decision_rows import as_stored
from mailbot.guard import IDENTITY_CONFLICT
from mailbot.identity import identity_of
from mailbot.pipeline import Processed
from mailbot.priors import load_priors
from parsers import read_message
from parsers.model import FieldValue, FormReading, Location, Submission, to_jsonable
from parsers.spec import FormSpec
from parsers.values import normalise
from storage.events import EventKind, add_event
from storage.models import Application, Event, Message, MessageState
from templates import TemplateSet, local_time


class QueueError(Exception):
    """An admin's request cannot be carried out; the message says why."""


def add_queue_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser("queue", help="the review queue: list, show, retry, resolve, correct, reject")
    # accepted before the action (``queue --by alice reject X``) and after it (``queue reject X --by alice``)
    queue.add_argument("--by", default=None, help="who is acting (default: the login name)")
    acting = argparse.ArgumentParser(add_help=False)
    acting.add_argument("--by", default=argparse.SUPPRESS, help="who is acting (default: the login name)")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="what is waiting for a person", parents=[acting])
    show = actions.add_parser("show", help="everything about one item", parents=[acting])
    show.add_argument("id", help="reference, message id or queue number")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    retry = actions.add_parser(
        "retry", help="read and decide again with today's readers and configuration", parents=[acting]
    )
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    retry.add_argument("--call", help="read it as this call's form (an address several calls share)")
    resolve = actions.add_parser(
        "resolve", help="type in the fields of a form the bot could not read", parents=[acting]
    )
    correct = actions.add_parser(
        "correct", help="correct the fields of an item resolved earlier (a logged revision)", parents=[acting]
    )
    for typing in (resolve, correct):
        typing.add_argument("id")
        typing.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", required=True)
        typing.add_argument(
            "--dry-run", action="store_true", help="show what would be decided and sent, change nothing"
        )
        typing.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
        typing.add_argument(
            "--allow-missing",
            action="store_true",
            help="go ahead although required fields are missing (the applicant is told what is missing)",
        )
    correct.add_argument("--answer", action="store_true", help="send the applicant a new acknowledgement")
    confirm = actions.add_parser(
        "confirm", help="apply a form held as an identity conflict (its sender is genuine)", parents=[acting]
    )
    confirm.add_argument("id")
    reject = actions.add_parser("reject", help="close an item without an application", parents=[acting])
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--notify", action="store_true", help="tell the applicant (with the reason)")


def _actor(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def find_item(desk: ReviewDesk, ident: str) -> int:
    with desk.store.sessions() as session:
        query = select(Message.id).where(
            (Message.reference == ident) | (Message.message_key == ident) | (Message.message_id == ident)
        )
        found = session.scalar(query)
        if found is None and ident.isdigit():
            found = session.scalar(select(Message.id).where(Message.id == int(ident)))
        if found is None:
            raise QueueError(f"no message {ident!r} (use a reference such as FUND24-0042, a Message-ID or a number)")
        return found


def queued(desk: ReviewDesk) -> list[Message]:
    with desk.store.sessions() as session:
        return list(
            session.scalars(select(Message).where(Message.state == MessageState.REVIEW).order_by(Message.arrival))
        )


def _age(since: datetime) -> str:
    delta = utcnow() - since
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h {int(delta.total_seconds() // 60) % 60}m"


def _held(message: Message) -> str | None:
    """The reason of a form held because its sender is not on the application it names, or None."""
    flags = (message.decision or {}).get("flags") or []
    return IDENTITY_CONFLICT if IDENTITY_CONFLICT in flags else None


def list_items(desk: ReviewDesk) -> str:
    rows = queued(desk)
    if not rows:
        return "The review queue is empty.\n"
    lines = [f"{'id':>5}  {'reference':<11}  {'age':>7}  {'call':<15}  {'sender':<30}  reason"]
    for message in rows:
        lines.append(
            f"{message.id:>5}  {message.reference or '-':<11}  {_age(message.decided_at or message.recorded_at):>7}  "
            f"{message.call_id or '-':<15}  {message.from_addr[:30]:<30}  {message.reason or _held(message) or '-'}"
        )
    return "\n".join(lines) + f"\n{len(rows)} item(s); folders under {desk.review.root}\n"


def item_record(desk: ReviewDesk, pk: int) -> dict[str, Any]:
    """Everything an admin needs about one item, as data (``queue show --json``) and for its card."""
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        call = next((c for c in desk.settings.call if c.id == message.call_id), None)
        zone = call.timezone if call else "Asia/Shanghai"
        reading = message.reading or {}
        form = reading.get("form") or {}
        labels = field_labels(call.form_spec if call else None, desk.templates)
        read = [
            {
                "field": name,
                "label": labels.get(name, name),
                "value": (found or {}).get("value"),
                "confidence": (found or {}).get("confidence"),
                "where": ((found or {}).get("where") or {}).get("file"),
            }
            for name, found in (form.get("fields") or {}).items()
        ]
        events = session.scalars(select(Event).where(Event.message_pk == pk).order_by(Event.at, Event.id))
        reason = desk.templates.reason(message.reason) if message.reason else None
        return {
            "id": message.id,
            "reference": message.reference,
            "message_id": message.message_id,
            "call": message.call_id,
            "from": message.from_addr,
            "subject": message.subject,
            "arrival": message.arrival.astimezone(ZoneInfo(zone)).isoformat(),
            "arrival_text": local_time(message.arrival, zone, "en"),
            "state": message.state,
            "outcome": message.outcome,
            "reason": message.reason,
            "reason_text": reason.en if reason else None,
            "decision": (message.decision or {}).get("explanation"),
            "attachments": [
                {"filename": a.filename, "kind": a.kind, "size": a.size, "role": a.role} for a in message.attachments
            ],
            "read": read,
            "missing": list((message.decision or {}).get("missing") or []),
            "diagnostics": list(reading.get("diagnostics") or []),
            "error": next(reversed((message.error or "").splitlines()), None),
            "history": [
                {
                    "at": e.at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
                    "what": e.kind,
                    "by": e.actor,
                    "detail": e.detail,
                }
                for e in events
            ],
            "folder": str(desk.review.folder_of(message)),
        }


def field_labels(spec: FormSpec | None, templates: TemplateSet) -> dict[str, str]:
    """How a person knows each field: the form's own (Chinese) label, then the English one."""
    names = templates.table("ack/fields.toml")
    labels: dict[str, str] = {}
    for field in spec.fields if spec else ():
        english = str((names.get(field.name) or {}).get("en") or field.name)
        labels[field.name] = f"{field.labels[0]} / {english}" if field.labels else english
    return labels


def show_item(desk: ReviewDesk, pk: int, as_json: bool = False) -> str:
    record = item_record(desk, pk)
    if as_json:
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    return desk.templates.render("queue/card.txt.j2", {"item": record, "size": human_size}).rstrip() + "\n"


def human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} bytes"


def _note_admin_action(desk: ReviewDesk, pk: int, action: str, result: Processed, actor: str) -> None:
    """Record who retried or resolved an item, and mark its folder closed if it left the queue."""
    with desk.store.sessions() as session, session.begin():
        message = session.get_one(Message, pk)
        add_event(session, EventKind(f"queue-{action}"), actor, pk, outcome=result.outcome, reference=result.reference)
        if message.state != MessageState.REVIEW:
            desk.review.mark_closed(message, result.outcome, actor)


def _retry_one(desk: ReviewDesk, pk: int, actor: str, call_id: str | None = None) -> Processed | str:
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW:
            return f"{message.reference or pk}: not in the review queue (it is {message.state})"
    try:
        result = desk.processor.reprocess(pk, actor=actor, call_id=call_id)
    except Exception as exc:  # the item stays in the queue; say why and go on with the next
        return f"{pk}: still in the queue: {exc.__class__.__name__}: {exc}"
    _note_admin_action(desk, pk, "retried", result, actor)
    return result


def confirm_item(desk: ReviewDesk, pk: int, actor: str) -> Processed:
    """Apply a form held as an identity conflict: its sender is confirmed to speak for the applicant."""
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW or _held(message) is None:
            raise QueueError(f"{message.reference or pk} is not held as an identity conflict")
    result = desk.processor.reprocess(pk, actor=actor, confirmed=True)
    _note_admin_action(desk, pk, "confirmed", result, actor)
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
        rules = desk.processor.rules[call.id]
        form = submission.form
        probe = (
            as_stored(identity_of(dict(form.values()), submission.envelope.from_addr, rules.institution_aliases))
            if form
            else None
        )
        priors = load_priors(session, call.id, message.arrival, pk, probe, form.sha256 if form else None)
        # the same test of "a reply to one of our answers" as the pipeline's, so the preview matches
        ours = desk.processor.ours_among(session, submission.envelope)
        return decide(submission, message.message_key, message.arrival, rules, priors, ours)


def plan_typing(desk: ReviewDesk, pk: int, assignments: list[str], correcting: bool, answer: bool) -> Plan:
    typed = parse_assignments(assignments)
    with desk.store.sessions() as session:
        message = session.get_one(Message, pk)
        if correcting:
            if message.state == MessageState.REVIEW:
                raise QueueError(f"{message.reference or pk} is still in the review queue: use `queue resolve`")
            typed = {**_typed_before(session, pk), **typed}
            if not _typed_before(session, pk):
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


def _typed_before(session: Session, pk: int) -> dict[str, str]:
    """The fields typed in when the item was resolved, with every correction since."""
    typed: dict[str, str] = {}
    for event in session.scalars(
        select(Event)
        .where(Event.message_pk == pk, Event.kind.in_(("queue-resolved", "queue-corrected")))
        .order_by(Event.id)
    ):
        typed.update(event.detail.get("fields") or {})
    return typed


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


def resolve_item(
    desk: ReviewDesk, pk: int, assignments: list[str], actor: str, allow_missing: bool = True
) -> Processed:
    plan = plan_typing(desk, pk, assignments, correcting=False, answer=True)
    check_required(plan, allow_missing)
    return carry_out_resolve(desk, plan, actor)


def carry_out_resolve(desk: ReviewDesk, plan: Plan, actor: str) -> Processed:
    result = desk.processor.reprocess(plan.pk, plan.submission, actor=actor)
    with desk.store.sessions() as session, session.begin():
        add_event(session, EventKind.QUEUE_RESOLVED, actor, plan.pk, outcome=result.outcome, fields=plan.typed)
        message = session.get_one(Message, plan.pk)
        if message.state != MessageState.REVIEW:
            desk.review.mark_closed(message, result.outcome, actor)
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
        application = session.get(Application, message.application_id) if message.application_id else None
        before = dict(application.fields) if application else {}
        decision = dict(message.decision or {})
        decision.update(missing=list(plan.decision.missing), explanation=plan.decision.explanation)
        message.decision = decision
        message.reading = reading
        if application is not None and application.current_message_pk == message.id:
            application.fields = values
            application.missing = list(plan.decision.missing)
            if application.status in ("accepted", "incomplete"):
                application.status = "incomplete" if plan.decision.missing else "accepted"
            application.updated_at = utcnow()
        changed = {
            name: [before.get(name), values.get(name)] for name in values if before.get(name) != values.get(name)
        }
        add_event(
            session, EventKind.QUEUE_CORRECTED, actor, plan.pk, fields=plan.typed, changed=changed, answered=plan.answer
        )
        if plan.answer:
            message.attempts += 1  # a new answer needs its own Message-ID
            session.flush()
            desk.processor.outbox.answer_again(session, message, plan.decision, plan.submission)
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
        message.state = MessageState.DONE
        decision = dict(message.decision or {})
        decision.update(rule="rejected-by-admin", explanation=f"closed by {actor}: {reason}")
        message.decision = decision
        add_event(session, EventKind.QUEUE_REJECTED, actor, pk, reason=reason, notify=notify)
        told = notify and desk.processor.outbox.closed_notice(session, message, reason)
    # only once the rejection is committed: a failure before leaves the item open, folder and all
    desk.review.mark_closed(message, f"rejected: {reason}", actor)
    if told:
        desk.send()
        return f"closed {pk} and told the applicant"
    if notify:
        return f"closed {pk}; nobody was told: the sender's address cannot be answered"
    return f"closed {pk}"


def _confirmed(question: str) -> bool:
    """On a terminal, ask; in a script (no terminal) the admin has said what to do with the options."""
    if not sys.stdin.isatty():
        return True
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def _type_in(desk: ReviewDesk, args: argparse.Namespace, correcting: bool) -> int:
    pk = find_item(desk, args.id)
    plan = plan_typing(desk, pk, args.field, correcting, answer=bool(getattr(args, "answer", False)))
    sys.stdout.write(describe_plan(desk, plan, correcting))
    check_required(plan, args.allow_missing)
    if args.dry_run:
        print("dry run: nothing was changed or sent")
        return 0
    if not args.yes and not _confirmed("Go ahead?"):
        print("nothing was changed")
        return 1
    if correcting:
        print(carry_out_correction(desk, plan, _actor(args)))
    else:
        result = carry_out_resolve(desk, plan, _actor(args))
        print(f"{result.message_key}: {result.outcome} ({result.reference})")
    return 0


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    with AdminContext(settings) as desk:
        try:
            if args.action == "list":
                sys.stdout.write(list_items(desk))
            elif args.action == "show":
                sys.stdout.write(show_item(desk, find_item(desk, args.id), args.json))
            elif args.action == "retry":
                pks = [m.id for m in queued(desk)] if args.all else [find_item(desk, args.id)]
                for result in retry_items(desk, pks, _actor(args), args.call):
                    print(
                        result
                        if isinstance(result, str)
                        else f"{result.message_key}: {result.outcome} ({result.reference})"
                    )
            elif args.action in ("resolve", "correct"):
                return _type_in(desk, args, correcting=args.action == "correct")
            elif args.action == "confirm":
                result = confirm_item(desk, find_item(desk, args.id), _actor(args))
                print(f"{result.message_key}: {result.outcome} ({result.reference})")
            elif args.action == "reject":
                print(reject_item(desk, find_item(desk, args.id), args.reason, args.notify, _actor(args)))
        except QueueError as exc:
            print(f"mailbot queue: {exc}", file=sys.stderr)
            return 1
    return 0
