"""Exports: one record per processed message, as JSON, CSV or an Excel workbook.

The workbook is what a review committee starts from: a sheet of current applications (one row
each, every field the form was read for, flags, links to superseded and duplicate submissions)
and a sheet of every message. A sheet's first row names each column as the coordinators do (the
call's own form labels, in Chinese), its second the column's key in English (the same as in CSV
and JSON); arrival times are real date-time cells in the call's time zone. The CSV starts with a
byte-order mark so that Excel opens it as UTF-8. Contact fields are left out with ``redact``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from sqlalchemy.orm import Session

from mailbot.config import Settings
from mailbot.decision import Outcome
from mailbot.export_sheets import cell_value, write_sheet
from storage.decisions import reference_of
from storage.exports import applications_with_current_form, decided_messages
from storage.models import Application, Message, MessageState
from templates import TemplateSet

UNREADABLE = Outcome.UNREADABLE.value

# the fields of the packaged calls, in form order: the columns when no configuration is at hand
EXPORT_FIELDS = (
    "project_title",
    "applicant_name",
    "gender",
    "birth",
    "title",
    "degree",
    "department",
    "institution",
    "phone",
    "email",
    "direction",
    "topic",
    "budget",
    "prior_grant",
)
CONTACT_FIELDS = frozenset({"email", "phone"})
DEFAULT_ZONE = "Asia/Shanghai"
ExportFormat = Literal["json", "csv", "xlsx"]


@dataclass(frozen=True)
class ExportLayout:
    """Which form fields the export has, how coordinators name them, and each call's time zone."""

    fields: tuple[str, ...]
    labels: dict[str, str]  # field name -> the form's (Chinese) label
    zones: dict[str, str]  # call id -> IANA zone

    def zone_of(self, call_id: str | None) -> str:
        return self.zones.get(call_id or "", DEFAULT_ZONE)


@dataclass(frozen=True)
class ApplicationAt:
    """An application as it stood at a moment (now, or the end of a past day): its form, status and flags then."""

    application: Application
    message: Message  # its current form then
    status: str
    fields: Mapping[str, Any]
    missing: tuple[str, ...]
    flags: tuple[str, ...]

    @property
    def project_title(self) -> str | None:
        title = self.fields.get("project_title")
        return str(title) if title not in (None, "") else self.application.project_title


@dataclass(frozen=True)
class Snapshot:
    """A call as it stood at a moment, built by :func:`mailbot.digest.moment.call_at`: what a workbook shows.

    Without one the workbook shows the database as it is now.
    """

    # each message decided by then, with the outcome it had then and, where a later decision has
    # replaced that one on its row, what the earlier decision's event recorded
    messages: tuple[tuple[Message, str, dict[str, Any] | None], ...]
    applications: tuple[ApplicationAt, ...]  # late ones included, as in the workbook of today


def export_layout(settings: Settings | None = None, call_id: str | None = None) -> ExportLayout:
    """The fields of ``call_id`` (or of every configured call, in form order), or the packaged set."""
    if settings is None:
        return ExportLayout(EXPORT_FIELDS, {}, {})
    calls = [c for c in settings.call if call_id in (None, c.id)]
    fields: list[str] = []
    labels: dict[str, str] = {}
    for call in calls:
        for spec in call.form_spec.fields:
            if spec.name not in labels:
                fields.append(spec.name)
                labels[spec.name] = spec.labels[0] if spec.labels else spec.name
    return ExportLayout(tuple(fields), labels, {c.id: c.timezone for c in settings.call})


def local_arrival(message: Message, layout: ExportLayout) -> datetime:
    return message.arrival.astimezone(ZoneInfo(layout.zone_of(message.call_id)))


def message_fields(message: Message, layout: ExportLayout | None = None) -> dict[str, Any] | None:
    """The form's values as read (or as an admin typed them in), or None when there was no form.

    Every field of ``layout`` is there (None where the form had no value), then any other field read.
    """
    reading = message.reading or {}
    form = reading.get("form")
    if not form:
        return None
    values = {name: (found or {}).get("value") for name, found in (form.get("fields") or {}).items()}
    names = (layout or export_layout()).fields
    return {**{name: values.get(name) for name in names}, **values}


def pseudonym(key: str | None) -> str | None:
    """A stable stand-in for a Message-ID, which often carries the sender's address."""
    if key is None or key.startswith("purged:"):
        return key
    return "purged:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _key(key: str | None, redact: bool) -> str | None:
    return pseudonym(key) if redact else key


def message_record(
    message: Message,
    redact: bool = False,
    layout: ExportLayout | None = None,
    outcome: str | None = None,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One export row; ``redact`` leaves out contacts, the sender, and anything that may quote them.

    ``outcome`` is the one the message had at an earlier moment, when the row shows that moment;
    ``earlier`` is what the decision of that moment recorded in its event, when a later decision has
    replaced it on the message's row (see :func:`decided_then`).
    """
    layout = layout or export_layout()
    outcome = outcome or message.outcome
    decided = decided_then(message, outcome, earlier)
    fields = None if outcome == UNREADABLE and earlier is not None else message_fields(message, layout)
    if fields is not None and redact:
        fields = {k: v for k, v in fields.items() if k not in CONTACT_FIELDS}
    return {
        "message_id": _key(message.message_id or message.message_key, redact),
        "mailbox": message.mailbox,
        "call": message.call_id,
        "arrival": local_arrival(message, layout).isoformat(),
        "outcome": outcome,
        "reference": decided.get("reference"),
        "fields": fields,
        "missing": list(decided.get("missing") or []) or None,
        "supersedes": _key(decided.get("supersedes"), redact),
        "duplicate_of": _key(decided.get("duplicate_of"), redact),
        "reason": decided.get("reason"),
        "rule": decided.get("rule"),
        "explanation": None if redact else decided.get("explanation"),
        "flags": list(decided.get("flags") or []),
        "state": decided.get("state"),
        "from": None if redact else message.from_addr,
        "subject": message.subject,
    }


def decided_then(message: Message, outcome: str | None, earlier: dict[str, Any] | None) -> dict[str, Any]:
    """What a row says of the message's decision: its row's columns, or an earlier decision's event.

    An event written before these events recorded the whole decision lacks some of it: what it
    lacks is left empty rather than taken from the later decision, except the state, which follows
    from the outcome (a form that could not be read waits in review), and the reference, which a
    message keeps once given.
    """
    if earlier is None:
        decision = message.decision or {}
        return {
            "reference": message.reference,
            "missing": decision.get("missing"),
            "supersedes": message.supersedes_key,
            "duplicate_of": message.duplicate_of_key,
            "reason": message.reason,
            "rule": decision.get("rule"),
            "explanation": decision.get("explanation"),
            "flags": decision.get("flags"),
            "state": message.state,
        }
    derived_state = MessageState.REVIEW.value if outcome == UNREADABLE else MessageState.DONE.value
    return {
        **earlier,
        "reference": earlier.get("reference", message.reference),
        "state": earlier.get("state") or derived_state,
    }


def export_records(
    session: Session, call_id: str | None = None, redact: bool = False, layout: ExportLayout | None = None
) -> list[dict[str, Any]]:
    layout = layout or export_layout()
    return [message_record(m, redact, layout) for m in decided_messages(session, call_id)]


def _flat(record: dict[str, Any], redact: bool, layout: ExportLayout | None = None) -> dict[str, Any]:
    """A record with its fields as columns (after the message's own, before the decision's)."""
    names = (layout or export_layout()).fields
    fields = record.get("fields") or {}
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "fields":
            for name in [*names, *(n for n in fields if n not in names)]:
                if not (redact and name in CONTACT_FIELDS):
                    row[name] = fields.get(name)
        elif key in ("missing", "flags"):
            row[key] = ", ".join(value or [])
        else:
            row[key] = value
    return row


def to_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(records), ensure_ascii=False, indent=2)


def to_csv(records: Sequence[dict[str, Any]], redact: bool = False, layout: ExportLayout | None = None) -> str:
    rows = [{key: cell_value(value) for key, value in _flat(r, redact, layout).items()} for r in records]
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["message_id"]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def current_applications(session: Session, call_id: str | None) -> list[ApplicationAt]:
    """Every application (of ``call_id``) as it is now."""
    return [
        ApplicationAt(
            application,
            message,
            application.status,
            application.fields or {},
            tuple(str(name) for name in application.missing or ()),
            tuple(str(flag) for flag in application.flags or ()),
        )
        for application, message in applications_with_current_form(session, call_id)
    ]


def application_rows(
    session: Session,
    call_id: str | None,
    redact: bool,
    layout: ExportLayout | None = None,
    applications: Sequence[ApplicationAt] | None = None,
) -> list[dict[str, Any]]:
    """One row per application: its status, form and flags, now or as ``applications`` had them."""
    layout = layout or export_layout()
    rows = []
    for view in current_applications(session, call_id) if applications is None else applications:
        application, message = view.application, view.message
        row: dict[str, Any] = {
            "reference": reference_of(session, application.application_key),
            "current_reference": message.reference,
            "call": application.call_id,
            "status": view.status,
            "arrival": local_arrival(message, layout),
        }
        fields = view.fields
        for name in [*layout.fields, *(n for n in fields if n not in layout.fields)]:
            if not (redact and name in CONTACT_FIELDS):
                row[name] = fields.get(name)
        row["missing"] = ", ".join(view.missing)
        row["flags"] = ", ".join(view.flags)
        row["supersedes"] = _key(message.supersedes_key, redact)
        row["duplicate_of"] = _key(application.duplicate_of_key, redact)
        row["message_id"] = _key(message.message_id or message.message_key, redact)
        rows.append(row)
    return rows


def column_headings(layout: ExportLayout, call_id: str | None, templates: TemplateSet | None = None) -> dict[str, str]:
    """The first header row: the form's own labels for fields, the coordinators' words for the rest."""
    table = (templates or TemplateSet()).table("export/columns.toml")
    headings = {key: str(text) for key, text in (table.get("columns") or {}).items()}
    calls = [call_id] if call_id else list(layout.zones)
    zones = {layout.zone_of(c) for c in calls} or {DEFAULT_ZONE}
    zone_names = table.get("zones") or {}
    if len(zones) == 1:
        (zone,) = zones
        headings["arrival"] += f"（{zone_names.get(zone, zone)}）"
    return {**headings, **layout.labels}


def to_xlsx(
    session: Session,
    call_id: str | None = None,
    redact: bool = False,
    settings: Settings | None = None,
    templates: TemplateSet | None = None,
    snapshot: Snapshot | None = None,
) -> bytes:
    """The workbook of the database now, or of the call as ``snapshot`` shows it at an earlier moment."""
    layout = export_layout(settings, call_id)
    headings = column_headings(layout, call_id, templates)
    workbook = Workbook()
    views = None if snapshot is None else snapshot.applications
    write_sheet(
        workbook, "Applications", application_rows(session, call_id, redact, layout, views), headings, first=True
    )
    decided = (
        [(m, str(m.outcome), None) for m in decided_messages(session, call_id)]
        if snapshot is None
        else snapshot.messages
    )
    messages = []
    for message, outcome, earlier in decided:
        row = _flat(message_record(message, redact, layout, outcome, earlier), redact, layout)
        row["arrival"] = local_arrival(message, layout)
        messages.append(row)
    write_sheet(workbook, "Messages", messages, headings)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def write_export(
    session: Session,
    fmt: ExportFormat,
    call_id: str | None,
    redact: bool,
    target: Path | None,
    settings: Settings | None = None,
) -> bytes:
    layout = export_layout(settings, call_id)
    if fmt == "xlsx":
        data = to_xlsx(session, call_id, redact, settings)
    elif fmt == "csv":
        data = to_csv(export_records(session, call_id, redact, layout), redact, layout).encode("utf-8-sig")
    else:
        data = to_json(export_records(session, call_id, redact, layout)).encode("utf-8")
    if target is not None:
        target.write_bytes(data)
    return data
