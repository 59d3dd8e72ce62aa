"""What ``mailbot queue list`` and ``queue show`` print: the waiting items, and one item's card.

Read-only; the actions on an item are in :mod:`mailbot.admin.queue_actions`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.admin.context import ReviewDesk
from mailbot.clock import utcnow
from mailbot.guard import IDENTITY_CONFLICT
from parsers.spec import FormSpec
from storage.models import Message
from storage.review_items import history_of, message_pk_named, review_queue
from templates import TemplateSet, local_time


class QueueError(Exception):
    """An admin's request cannot be carried out; the message says why."""


def find_item(desk: ReviewDesk, ident: str) -> int:
    with desk.store.sessions() as session:
        found = message_pk_named(session, ident)
    if found is None:
        raise QueueError(f"no message {ident!r} (use a reference such as FUND24-0042, a Message-ID or a number)")
    return found


def queued(desk: ReviewDesk) -> list[Message]:
    with desk.store.sessions() as session:
        return review_queue(session)


def _age(since: datetime) -> str:
    delta = utcnow() - since
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h {int(delta.total_seconds() // 60) % 60}m"


def held_reason(message: Message) -> str | None:
    """The reason of a form held because its sender is not on the application it names, or None."""
    flags = (message.decision or {}).get("flags") or []
    return IDENTITY_CONFLICT if IDENTITY_CONFLICT in flags else None


def list_items(desk: ReviewDesk) -> str:
    rows = queued(desk)
    if not rows:
        return "The review queue is empty.\n"
    lines = [f"{'id':>5}  {'reference':<11}  {'age':>7}  {'call':<15}  {'sender':<30}  reason"]
    for message in rows:
        reason = message.reason or held_reason(message) or "-"
        lines.append(
            f"{message.id:>5}  {message.reference or '-':<11}  {_age(message.decided_at or message.recorded_at):>7}  "
            f"{message.call_id or '-':<15}  {message.from_addr[:30]:<30}  {reason}"
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
        events = history_of(session, pk)
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
