"""What ``mailbot parse`` prints: each field with its value, confidence and where it was found."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from parsers.documents import read_document
from parsers.limits import Limits
from parsers.message import read_message
from parsers.model import FieldScalar, FormReading, Submission, Unreadable, to_jsonable
from parsers.spec import FormSpec

_MESSAGE_SUFFIXES = (".eml", ".msg", ".txt")


def format_reading(reading: FormReading | Unreadable | None, spec: FormSpec, source: str = "") -> str:
    """Human text for one document's reading, every field of the call listed."""
    title = source or (reading.attachment if reading is not None else "document")
    if reading is None:
        return f"{title}: not a {spec.call_id} form (too few of its labels)\n"
    if isinstance(reading, Unreadable):
        detail = f" ({reading.detail})" if reading.detail else ""
        return f"{title}: unreadable: {reading.reason}{detail}\n"
    lines = [f"{title}: {spec.call_id} form, {reading.kind}, label match {reading.score:.2f}"]
    width = max(len(field.name) for field in spec.fields)
    for field in spec.fields:
        found = reading.fields.get(field.name)
        if found is None:
            lines.append(f"  {field.name:<{width}}  (no label found)")
            continue
        lines.append(
            f"  {field.name:<{width}}  {_shown(found.value):<32}  {found.confidence:.2f}  {found.where.describe()}"
        )
    lines.append(f"  missing: {', '.join(reading.missing) if reading.missing else 'nothing'}")
    return "\n".join(lines) + "\n"


def format_submission(submission: Submission, spec: FormSpec, source: str) -> str:
    envelope = submission.envelope
    lines = [
        f"{source}: message {envelope.message_id or '(no Message-ID)'}",
        f"  from {envelope.from_name} <{envelope.from_addr}>, subject {envelope.subject!r}",
    ]
    for attachment in submission.attachments:
        path = "/".join(attachment.path)
        note = f" — {attachment.note}" if attachment.note else ""
        lines.append(
            f"  [{path}] {attachment.filename} ({attachment.kind}, {attachment.size} bytes, {attachment.role}){note}"
        )
    text = "\n".join(lines) + "\n"
    if submission.form is not None:
        text += format_reading(submission.form, spec)
    elif submission.unreadable is not None:
        text += format_reading(submission.unreadable, spec)
    else:
        text += "  no form attached\n"
    for other in submission.other_forms:
        text += "  another form in the same mail:\n" + format_reading(other, spec)
    text += "".join(f"  note: {line}\n" for line in submission.diagnostics)
    return text


def _shown(value: FieldScalar) -> str:
    if value is None:
        return "(blank)"
    if isinstance(value, bool):
        return "是 yes" if value else "否 no"
    if isinstance(value, float):
        return f"{value:g}"
    return value


def parse_files(
    paths: Sequence[Path | str], spec: FormSpec, as_json: bool = False, limits: Limits | None = None
) -> tuple[str, bool]:
    """Read each file (.eml as a whole message, anything else as a document); ok when all had a form."""
    limits = limits or Limits()
    texts: list[str] = []
    results: list[dict[str, object]] = []
    ok = True
    for given in paths:
        path = Path(given)
        try:
            data = path.read_bytes()
        except OSError as exc:
            ok = False
            texts.append(f"{path}: cannot read: {exc.strerror}\n")
            results.append({"file": str(path), "error": str(exc.strerror)})
            continue
        if path.suffix.casefold() in _MESSAGE_SUFFIXES:
            submission = read_message(data, spec, limits)
            ok = ok and submission.form is not None
            texts.append(format_submission(submission, spec, str(path)))
            results.append({"file": str(path), "submission": to_jsonable(submission)})
        else:
            reading = read_document(data, path.name, spec, limits)
            ok = ok and isinstance(reading, FormReading)
            texts.append(format_reading(reading, spec, str(path)))
            results.append({"file": str(path), "reading": to_jsonable(reading)})
    if as_json:
        return json.dumps(results, ensure_ascii=False, indent=2) + "\n", ok
    return "\n".join(texts), ok
