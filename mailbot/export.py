"""Exports: one record per processed message, as JSON, CSV or an Excel workbook.

The workbook is what a review committee starts from: a sheet of current applications (one row
each, every field, flags, links to superseded and duplicate submissions) and a sheet of every
message. Arrival times are given in Beijing time; contact fields are left out with ``redact``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.clock import BEIJING
from storage.models import Application, Message

EXPORT_FIELDS = (
    "applicant_name",
    "gender",
    "title",
    "degree",
    "institution",
    "department",
    "email",
    "phone",
    "project_title",
    "topic",
    "budget",
    "prior_grant",
)
CONTACT_FIELDS = frozenset({"email", "phone"})
ExportFormat = Literal["json", "csv", "xlsx"]


def message_fields(message: Message) -> dict[str, Any] | None:
    """The form's values as read (or as an admin typed them in), or None when there was no form."""
    reading = message.reading or {}
    form = reading.get("form")
    if not form:
        return None
    values = {name: (found or {}).get("value") for name, found in (form.get("fields") or {}).items()}
    return {name: values.get(name) for name in EXPORT_FIELDS}


def pseudonym(key: str | None) -> str | None:
    """A stable stand-in for a Message-ID, which often carries the sender's address."""
    if key is None or key.startswith("purged:"):
        return key
    return "purged:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _key(key: str | None, redact: bool) -> str | None:
    return pseudonym(key) if redact else key


def message_record(message: Message, redact: bool = False) -> dict[str, Any]:
    """One export row; ``redact`` leaves out contacts, the sender, and anything that may quote them."""
    decision = message.decision or {}
    fields = message_fields(message)
    if fields is not None and redact:
        fields = {k: v for k, v in fields.items() if k not in CONTACT_FIELDS}
    return {
        "message_id": _key(message.message_id or message.message_key, redact),
        "mailbox": message.mailbox,
        "call": message.call_id,
        "arrival": message.arrival.astimezone(BEIJING).isoformat(),
        "outcome": message.outcome,
        "reference": message.reference,
        "fields": fields,
        "missing": list(decision.get("missing") or []) or None,
        "supersedes": _key(message.supersedes_key, redact),
        "duplicate_of": _key(message.duplicate_of_key, redact),
        "reason": message.reason,
        "rule": decision.get("rule"),
        "explanation": None if redact else decision.get("explanation"),
        "flags": list(decision.get("flags") or []),
        "state": message.state,
        "from": None if redact else message.from_addr,
        "subject": message.subject,
    }


def processed_messages(session: Session, call_id: str | None = None) -> list[Message]:
    query = select(Message).where(Message.outcome.is_not(None)).order_by(Message.arrival, Message.id)
    if call_id:
        query = query.where(Message.call_id == call_id)
    return list(session.scalars(query))


def export_records(session: Session, call_id: str | None = None, redact: bool = False) -> list[dict[str, Any]]:
    return [message_record(m, redact) for m in processed_messages(session, call_id)]


def _flat(record: dict[str, Any], redact: bool) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k != "fields"}
    fields = record.get("fields") or {}
    for name in EXPORT_FIELDS:
        if redact and name in CONTACT_FIELDS:
            continue
        row[name] = fields.get(name)
    for key in ("missing", "flags"):
        row[key] = ", ".join(record.get(key) or [])
    return row


def to_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(records), ensure_ascii=False, indent=2)


def to_csv(records: Sequence[dict[str, Any]], redact: bool = False) -> str:
    rows = [{key: _cell(value) for key, value in _flat(r, redact).items()} for r in records]
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["message_id"]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _sheet(workbook: Workbook, title: str, rows: Iterable[dict[str, Any]], first: bool = False) -> None:
    sheet = workbook.active if first else workbook.create_sheet()
    assert sheet is not None
    sheet.title = title
    rows = list(rows)
    columns = list(rows[0]) if rows else ["(empty)"]
    sheet.append(columns)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([_cell(row.get(c)) for c in columns])
    sheet.freeze_panes = "A2"
    for index, column in enumerate(columns, start=1):
        width = max([len(str(column))] + [len(str(r.get(column) or "")) for r in rows[:200]])
        sheet.column_dimensions[get_column_letter(index)].width = min(max(10, width + 2), 60)


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        # a control character stored before values were cleaned on reading must not break the workbook
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a value from a submission must never become a spreadsheet formula
    return value


def application_rows(session: Session, call_id: str | None, redact: bool) -> list[dict[str, Any]]:
    query = select(Application, Message).join(Message, Message.id == Application.current_message_pk)
    if call_id:
        query = query.where(Application.call_id == call_id)
    rows = []
    for application, message in session.execute(query.order_by(Application.id)):
        first = session.scalar(select(Message.reference).where(Message.message_key == application.application_key))
        row: dict[str, Any] = {
            "reference": first,
            "current_reference": message.reference,
            "call": application.call_id,
            "status": application.status,
            "arrival_beijing": message.arrival.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
        }
        for name in EXPORT_FIELDS:
            if not (redact and name in CONTACT_FIELDS):
                row[name] = (application.fields or {}).get(name)
        row["missing"] = ", ".join(application.missing or [])
        row["flags"] = ", ".join(application.flags or [])
        row["supersedes"] = _key(message.supersedes_key, redact)
        row["duplicate_of"] = _key(application.duplicate_of_key, redact)
        row["message_id"] = _key(message.message_id or message.message_key, redact)
        rows.append(row)
    return rows


def to_xlsx(session: Session, call_id: str | None = None, redact: bool = False) -> bytes:
    workbook = Workbook()
    _sheet(workbook, "Applications", application_rows(session, call_id, redact), first=True)
    _sheet(workbook, "Messages", (_flat(r, redact) for r in export_records(session, call_id, redact)))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def write_export(session: Session, fmt: ExportFormat, call_id: str | None, redact: bool, target: Path | None) -> bytes:
    if fmt == "xlsx":
        data = to_xlsx(session, call_id, redact)
    elif fmt == "csv":
        data = to_csv(export_records(session, call_id, redact), redact).encode("utf-8-sig")
    else:
        data = to_json(export_records(session, call_id, redact)).encode("utf-8")
    if target is not None:
        target.write_bytes(data)
    return data
