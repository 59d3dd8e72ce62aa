"""``mailbot parse`` on a form that yields no values: which labels it has and what they match.

A fund office runs this on its own blank form before opening a call: every configured field should
find its label, and a label the bot does not know shows which label variant to add to the call's
``[[call.field]]`` settings.
"""

from __future__ import annotations

from pathlib import Path

from mailbot.config import CallSettings
from parsers.docx_reader import read_docx
from parsers.errors import CannotRead
from parsers.fields import label_index
from parsers.layout import Block, Grid
from parsers.limits import Limits
from parsers.pdf_reader import read_pdf

# a label is a short cell; longer text is a value or a note
LABEL_CHARS = 24


def _blocks(path: Path, call: CallSettings) -> list[Block]:
    data = path.read_bytes()
    suffix = path.suffix.casefold()
    limits = Limits()
    if suffix == ".docx":
        return list(read_docx(data, path.name, limits).blocks)
    if suffix == ".pdf":
        return list(read_pdf(data, path.name, call.form_spec, limits).blocks)
    return []


def labels_found(path: Path, call: CallSettings) -> list[tuple[str, str | None]]:
    """Each label-like table cell of the document, in order, with the configured field it names."""
    index = label_index(call.form_spec)
    seen: dict[str, str | None] = {}
    for block in _blocks(path, call):
        if not isinstance(block, Grid):
            continue
        for row in block.rows:
            for cell in row:
                text = " ".join(cell.text.split())
                if cell.continued or not text or len(text) > LABEL_CHARS or text in seen:
                    continue
                seen[text] = index.field_of(text)
    return list(seen.items())


def labels_report(path: Path, call: CallSettings) -> str:
    """Plain lines for a person: the labels, what each matches, and the fields nothing matched."""
    try:
        found = labels_found(path, call)
    except (CannotRead, OSError, ValueError):
        return ""
    if not found:
        return ""
    lines = [f"  labels found in {path.name}, read for {call.id}:"]
    width = max(len(text) for text, _ in found)
    for text, field in found:
        lines.append(f"    {text:<{width}}  -> {field or '(no configured field)'}")
    matched = {field for _, field in found if field}
    unmatched = [f.name for f in call.form_spec.fields if f.name not in matched]
    if unmatched:
        lines.append(f"  configured fields without a label in this form: {', '.join(unmatched)}")
    else:
        lines.append("  every configured field has its label in this form")
    return "\n".join(lines) + "\n"
