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
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from mailbot.app import Bot
from mailbot.clock import BEIJING, utcnow
from mailbot.config import Settings
from mailbot.guard import IDENTITY_CONFLICT
from mailbot.pipeline import Processed
from parsers import read_message
from parsers.model import FieldValue, FormReading, Location, Submission
from parsers.values import normalise
from storage.models import Message, MessageState


class QueueError(Exception):
    """An admin's request cannot be carried out; the message says why."""


def add_queue_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser("queue", help="the review queue: list, show, retry, resolve, reject")
    queue.add_argument("--by", default=None, help="who is acting (default: the login name)")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="what is waiting for a person")
    show = actions.add_parser("show", help="everything about one item")
    show.add_argument("id", help="reference, message id or queue number")
    retry = actions.add_parser("retry", help="read and decide again with today's readers and configuration")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    resolve = actions.add_parser("resolve", help="type in the fields of a form the bot could not read")
    resolve.add_argument("id")
    resolve.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", required=True)
    confirm = actions.add_parser("confirm", help="apply a form held as an identity conflict (its sender is genuine)")
    confirm.add_argument("id")
    reject = actions.add_parser("reject", help="close an item without an application")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--notify", action="store_true", help="tell the applicant (with the reason)")


def _actor(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def find_item(bot: Bot, ident: str) -> int:
    with bot.store.sessions() as session:
        query = select(Message.id).where(
            (Message.reference == ident) | (Message.message_key == ident) | (Message.message_id == ident)
        )
        found = session.scalar(query)
        if found is None and ident.isdigit():
            found = session.scalar(select(Message.id).where(Message.id == int(ident)))
        if found is None:
            raise QueueError(f"no message {ident!r} (use a reference such as SMP24-0042, a Message-ID or a number)")
        return found


def queued(bot: Bot) -> list[Message]:
    with bot.store.sessions() as session:
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


def list_items(bot: Bot) -> str:
    rows = queued(bot)
    if not rows:
        return "The review queue is empty.\n"
    lines = [f"{'id':>5}  {'reference':<11}  {'age':>7}  {'call':<15}  {'sender':<30}  reason"]
    for message in rows:
        lines.append(
            f"{message.id:>5}  {message.reference or '-':<11}  {_age(message.decided_at or message.recorded_at):>7}  "
            f"{message.call_id or '-':<15}  {message.from_addr[:30]:<30}  {message.reason or _held(message) or '-'}"
        )
    return "\n".join(lines) + f"\n{len(rows)} item(s); folders under {bot.review.root}\n"


def show_item(bot: Bot, pk: int) -> str:
    with bot.store.sessions() as session:
        message = session.get_one(Message, pk)
        record: dict[str, Any] = {
            "id": message.id,
            "reference": message.reference,
            "message_id": message.message_id,
            "call": message.call_id,
            "from": message.from_addr,
            "subject": message.subject,
            "arrival (Beijing)": message.arrival.astimezone(BEIJING).isoformat(),
            "state": message.state,
            "outcome": message.outcome,
            "reason": message.reason,
            "decision": (message.decision or {}).get("explanation"),
            "attachments": [(a.filename, a.kind, a.size, a.role) for a in message.attachments],
            "diagnostics": list((message.reading or {}).get("diagnostics") or []),
            "error": (message.error or "").splitlines()[-1:] or None,
            "folder": str(bot.review.folder_of(message)),
        }
    return json.dumps(record, ensure_ascii=False, indent=2) + "\n"


def _note_admin_action(bot: Bot, pk: int, action: str, result: Processed, actor: str) -> None:
    """Record who retried or resolved an item, and mark its folder closed if it left the queue."""
    with bot.store.sessions() as session, session.begin():
        message = session.get_one(Message, pk)
        bot.store.add_event(session, f"queue-{action}", actor, pk, outcome=result.outcome, reference=result.reference)
        if message.state != MessageState.REVIEW:
            bot.review.mark_closed(message, result.outcome, actor)


def _retry_one(bot: Bot, pk: int, actor: str) -> Processed | str:
    with bot.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW:
            return f"{message.reference or pk}: not in the review queue (it is {message.state})"
    try:
        result = bot.processor.reprocess(pk, actor=actor)
    except Exception as exc:  # the item stays in the queue; say why and go on with the next
        return f"{pk}: still in the queue: {exc.__class__.__name__}: {exc}"
    _note_admin_action(bot, pk, "retried", result, actor)
    return result


def confirm_item(bot: Bot, pk: int, actor: str) -> Processed:
    """Apply a form held as an identity conflict: its sender is confirmed to speak for the applicant."""
    with bot.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW or _held(message) is None:
            raise QueueError(f"{message.reference or pk} is not held as an identity conflict")
    result = bot.processor.reprocess(pk, actor=actor, confirmed=True)
    _note_admin_action(bot, pk, "confirmed", result, actor)
    return result


def retry_items(bot: Bot, pks: list[int], actor: str) -> list[Processed | str]:
    results: list[Processed | str] = []
    for index, pk in enumerate(pks, start=1):
        results.append(_retry_one(bot, pk, actor))
        if len(pks) > 1:
            print(f"\r[{index}/{len(pks)}] retried", end="", file=sys.stderr, flush=True)
    if len(pks) > 1:
        print(file=sys.stderr)
    bot.send()
    return results


def typed_submission(settings: Settings, raw: bytes, call_id: str, typed: dict[str, str], actor: str) -> Submission:
    """The message as the bot read it, with the form replaced by what an admin typed."""
    spec = settings.call_by_id(call_id).form_spec
    known = {f.name: f for f in spec.fields}
    unknown = sorted(set(typed) - set(known))
    if unknown:
        raise QueueError(f"unknown field(s) {', '.join(unknown)}; this call's fields: {', '.join(known)}")
    where = Location(file=f"typed in by {actor}")
    fields = {
        name: FieldValue(normalise(known[name].kind, text, spec)[0], text, 1.0, where) for name, text in typed.items()
    }
    values = {name: fv.value for name, fv in fields.items()}
    form = FormReading(
        attachment=where.file, sha256="", kind="other", fields=fields, missing=spec.missing(values), score=1.0
    )
    submission = read_message(raw, spec)
    return replace(submission, form=form, unreadable=None)


def resolve_item(bot: Bot, pk: int, assignments: list[str], actor: str) -> Processed:
    typed: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise QueueError(f"--field takes NAME=VALUE, not {item!r}")
        typed[name.strip()] = value.strip()
    with bot.store.sessions() as session:
        message = session.get_one(Message, pk)
        if message.state != MessageState.REVIEW:
            raise QueueError(f"{message.reference or pk} is not in the review queue")
        raw, call_id = bot.store.archive.get(message.sha256), message.call_id or bot.settings.call[0].id
    submission = typed_submission(bot.settings, raw, call_id, typed, actor)
    result = bot.processor.reprocess(pk, submission, actor=actor)
    _note_admin_action(bot, pk, "resolved", result, actor)
    bot.send()
    return result


def reject_item(bot: Bot, pk: int, reason: str, notify: bool, actor: str) -> str:
    with bot.store.sessions() as session, session.begin():
        message = session.get_one(Message, pk, with_for_update=True)
        if message.state != MessageState.REVIEW:
            raise QueueError(f"{message.reference or pk} is not in the review queue")
        message.state = MessageState.DONE
        decision = dict(message.decision or {})
        decision.update(rule="rejected-by-admin", explanation=f"closed by {actor}: {reason}")
        message.decision = decision
        bot.store.add_event(session, "queue-rejected", actor, pk, reason=reason, notify=notify)
        told = notify and bot.processor.queue_notice(session, message, reason)
    # only once the rejection is committed: a failure before leaves the item open, folder and all
    bot.review.mark_closed(message, f"rejected: {reason}", actor)
    if told:
        bot.send()
        return f"closed {pk} and told the applicant"
    if notify:
        return f"closed {pk}; nobody was told: the sender's address cannot be answered"
    return f"closed {pk}"


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    with Bot(settings) as bot:
        try:
            if args.action == "list":
                sys.stdout.write(list_items(bot))
            elif args.action == "show":
                sys.stdout.write(show_item(bot, find_item(bot, args.id)))
            elif args.action == "retry":
                pks = [m.id for m in queued(bot)] if args.all else [find_item(bot, args.id)]
                for result in retry_items(bot, pks, _actor(args)):
                    print(
                        result
                        if isinstance(result, str)
                        else f"{result.message_key}: {result.outcome} ({result.reference})"
                    )
            elif args.action == "resolve":
                result = resolve_item(bot, find_item(bot, args.id), args.field, _actor(args))
                print(f"{result.message_key}: {result.outcome} ({result.reference})")
            elif args.action == "confirm":
                result = confirm_item(bot, find_item(bot, args.id), _actor(args))
                print(f"{result.message_key}: {result.outcome} ({result.reference})")
            elif args.action == "reject":
                print(reject_item(bot, find_item(bot, args.id), args.reason, args.notify, _actor(args)))
        except QueueError as exc:
            print(f"mailbot queue: {exc}", file=sys.stderr)
            return 1
    return 0
