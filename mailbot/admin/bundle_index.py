"""The files a bundle is written as: ``index.xlsx`` for the reviewers, and the zip or folder around it.

Every member gets the same fixed time and the index workbook pinned timestamps, so the same data
gives the same bytes; what goes into the bundle is decided in :mod:`mailbot.admin.bundle`.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

from mailbot.config import CallSettings
from mailbot.export_sheets import not_a_formula
from storage.models import Message

if TYPE_CHECKING:  # the bundle's layout uses local_text from here
    from mailbot.admin.bundle import Bundle, Entry, Grouping

INDEX_COLUMNS = (
    "folder",
    "reference",
    "form_reference",
    "status",
    "applicant",
    "institution",
    "title",
    "topic",
    "direction",
    "arrival",
    "files",
    "sha256",
    "flags",
    "superseded",
)
PERSONAL_COLUMNS = ("email", "phone", "gender", "birth")
# A fixed time for every file in the zip and the workbook: a date the ZIP format can hold.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_FIXED_DATETIME = datetime(*FIXED_TIME, tzinfo=UTC)
_CORE_TIMES = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")


def local_text(value: datetime, call: CallSettings) -> str:
    return value.astimezone(call.tz).strftime("%Y-%m-%d %H:%M:%S")


def index_workbook(
    entries: Sequence[Entry],
    superseded: Sequence[dict[str, Any]],
    call: CallSettings,
    words: dict[str, Any],
    grouping: Grouping,
    redact: bool,
    notes: Sequence[str],
    messages: Sequence[Message],
) -> bytes:
    """index.xlsx: a row per entry, the superseded versions, and what the bundle is (with pinned timestamps)."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = words["sheets"]["applications"]
    columns = INDEX_COLUMNS if redact else (*INDEX_COLUMNS, *PERSONAL_COLUMNS)
    sheet.append(list(columns))
    for entry in entries:
        row = index_row(entry, call, redact)
        sheet.append([not_a_formula(row[column]) for column in columns])
    _style(sheet)
    old = workbook.create_sheet(words["sheets"]["superseded"])
    old_columns = ("reference", "replaced_by", "application", "arrival", "sha256", "note")
    old.append(list(old_columns))
    for item in superseded:
        old.append([not_a_formula(item[column]) for column in old_columns])
    _style(old)
    about = workbook.create_sheet(words["sheets"]["about"])
    texts = words["about"]
    latest = max((m.arrival for m in messages), default=_FIXED_DATETIME)
    lines = [
        texts["title"].format(call=call.name_zh),
        texts["made"].format(latest=local_text(latest, call)),
        texts["layout"].format(grouping=words["grouping"][grouping]),
        *([texts["redacted"]] if redact else []),
        texts["manifest"],
        *notes,
    ]
    for line in lines:
        about.append([line])
    about.column_dimensions["A"].width = 120
    for row in about.iter_rows():
        for cell in row:
            cell.alignment = Alignment(wrap_text=True)
    workbook.properties.creator = "mailbot"
    workbook.properties.created = _FIXED_DATETIME.replace(tzinfo=None)
    workbook.properties.modified = _FIXED_DATETIME.replace(tzinfo=None)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return pinned_zip(buffer.getvalue())


def index_row(entry: Entry, call: CallSettings, redact: bool) -> dict[str, Any]:
    """The index's cells for one entry, by column name."""
    topic = entry.fields.get("topic")
    known = next((t for t in call.topic if t.code == topic), None)
    row: dict[str, Any] = {
        "folder": entry.folder,
        "reference": entry.reference,
        "form_reference": entry.form_reference,
        "status": entry.status,
        "applicant": entry.fields.get("applicant_name"),
        "institution": entry.fields.get("institution"),
        "title": entry.fields.get("project_title"),
        "topic": topic,
        "direction": known.direction if known is not None else entry.fields.get("direction"),
        "arrival": local_text(entry.arrival, call),
        "files": "\n".join(entry.files),
        "sha256": entry.form_sha256,
        "flags": "\n".join(entry.flags),
        "superseded": ", ".join(entry.superseded),
    }
    if not redact:
        row.update({column: entry.fields.get(column) for column in PERSONAL_COLUMNS})
    return row


def _style(sheet: Any) -> None:
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"


def pinned_zip(data: bytes) -> bytes:
    """A zip package rewritten with every member at the fixed time, in its own order (openpyxl stamps now)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "docProps/core.xml":  # openpyxl sets "modified" to the moment of saving
                content = _CORE_TIMES.sub(rb"\g<1>1980-01-01T00:00:00Z\g<2>", content)
            target.writestr(_fixed_info(info.filename), content)
    return out.getvalue()


def _fixed_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def write_bundle(bundle: Bundle, target: Path) -> Path:
    """The bundle as a .zip (sorted, fixed times) or into a folder."""
    if target.suffix.lower() == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for item in bundle.files:
                archive.writestr(_fixed_info(item.path), item.data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())
        return target
    target.mkdir(parents=True, exist_ok=True)
    for item in bundle.files:
        path = target.joinpath(*item.path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
    return target


def iter_manifest(text: str) -> Iterator[tuple[str, str]]:
    """(sha256, path) of each MANIFEST.sha256 line."""
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        yield digest, path
