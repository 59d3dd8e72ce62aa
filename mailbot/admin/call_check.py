"""``mailbot call check``: a call's fields read from its blank form and from filled-in samples.

Every field must be found in the blank form, and blank there; the table shows field → label →
value for each sample, so a wrong label is seen before the first applicant writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailbot.admin.call_setup import CallSetupError
from mailbot.config import CallSettings
from parsers.documents import read_document
from parsers.errors import CannotRead
from parsers.fields import find_values, label_index
from parsers.form_labels import document_blocks, read_blank_form
from parsers.limits import Limits
from parsers.message import read_message
from parsers.model import FieldScalar, FormReading, Unreadable
from parsers.spec import FormSpec
from parsers.textnorm import clean_value


@dataclass(frozen=True)
class CheckRow:
    field: str
    kind: str
    label: str | None  # the label found in the blank form, None when none of the field's labels is there
    blank_value: str  # what the blank form holds there ("" when blank, as it must be)
    values: tuple[FieldScalar, ...]  # one per filled sample


@dataclass(frozen=True)
class CheckReport:
    call_id: str
    rows: tuple[CheckRow, ...]
    samples: tuple[str, ...]
    sample_problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(row.label is not None and not row.blank_value for row in self.rows) and not self.sample_problems


def check_call(call: CallSettings, filled: Sequence[Path], limits: Limits | None = None) -> CheckReport:
    """The blank form read with the call's fields (each found, all blank), then every filled sample."""
    if not call.form:
        raise CallSetupError(f'[[call]] {call.id} names no blank form (form = "…"): made by hand, not by call new')
    form_path = Path(call.form)
    limits = limits or Limits()
    spec = call.form_spec
    try:
        blank = read_blank_form(form_path.read_bytes(), form_path.name, limits)
        blocks = document_blocks(form_path.read_bytes(), form_path.name, limits, spec)
    except (OSError, CannotRead) as exc:
        raise CallSetupError(f"{form_path}: cannot read the blank form: {exc}") from None
    index = label_index(spec)
    label_of: dict[str, str] = {}
    for printed in blank.labels:
        named = index.field_of(printed.text)
        if named is not None:
            label_of.setdefault(named, printed.text)
    # every place each field's label pairs with a value: the blank form must leave one of them empty
    # (a team table's column "职称" beside "分工" is a pairing too, but not the field's own slot)
    slots: dict[str, list[str]] = {}
    for found in find_values(blocks, index):
        slots.setdefault(found.field, []).append(found.raw)
    readings: list[FormReading | None] = []
    problems: list[str] = []
    for path in filled:
        reading = _sample_reading(path, spec, limits)
        if isinstance(reading, FormReading):
            readings.append(reading)
        else:
            readings.append(None)
            problems.append(f"{path.name}: {reading.reason if reading is not None else 'not read as this form'}")
    rows = []
    for field in spec.fields:
        raws = slots.get(field.name, [])
        label = label_of.get(field.name) or (field.labels[0] if raws else None)
        filled_in = "" if any(_placeholder(raw) for raw in raws) else clean_value(raws[0]) if raws else ""
        rows.append(
            CheckRow(
                field.name,
                field.kind,
                label,
                filled_in,
                tuple(reading.value(field.name) if reading else None for reading in readings),
            )
        )
    return CheckReport(call.id, tuple(rows), tuple(path.name for path in filled), tuple(problems))


def _sample_reading(path: Path, spec: FormSpec, limits: Limits) -> FormReading | Unreadable | None:
    """A filled sample: a document, or a message (.eml) whose attached form is read."""
    data = path.read_bytes()
    if path.suffix.lower() == ".eml":
        submission = read_message(data, spec, limits)
        return submission.form or submission.unreadable
    return read_document(data, path.name, spec, limits)


def _placeholder(raw: str) -> bool:
    """Room for a value: blank, a placeholder, or tick boxes none of which is ticked."""
    from parsers.form_labels import choices, is_blank

    return is_blank(raw) or (bool(choices(raw)) and not any(mark in raw for mark in "☑☒■√✓✔●◉▣"))


def format_check(report: CheckReport) -> str:
    header = ["field", "kind", "label found", "blank form", *report.samples]
    table = [header]
    for row in report.rows:
        table.append(
            [
                row.field,
                row.kind,
                row.label if row.label is not None else "NOT FOUND",
                row.blank_value or "(blank)",
                *("—" if value is None else str(value) for value in row.values),
            ]
        )
    widths = [max(_width(line[column]) for line in table) for column in range(len(header))]
    lines = ["  ".join(_pad(cell, widths[column]) for column, cell in enumerate(line)).rstrip() for line in table]
    lines.extend(f"problem: {problem}" for problem in report.sample_problems)
    verdict = (
        "OK: every field found in the blank form" if report.ok else "NOT OK: see NOT FOUND, filled blanks, problems"
    )
    return "\n".join([*lines, verdict]) + "\n"


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
