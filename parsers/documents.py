"""One attached file, whatever it is, to a form reading, a reason it cannot be read, or nothing.

The kind comes from the content (parsers.sniff). Archives (.zip, .7z, .rar) and Outlook's wrappers
(winmail.dat, attached .msg items) are opened in memory and each file inside is examined like an
attachment of its own, so the form inside them is found the same way; nesting counts against
``archive_max_depth`` whatever the wrapper.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace

from parsers.archive import ArchiveKind, read_archive
from parsers.archive_containment import Member
from parsers.convert import convert, office_binary
from parsers.docx_reader import read_docx
from parsers.errors import CannotRead
from parsers.fields import read_form
from parsers.layout import Block, Line
from parsers.limits import Limits
from parsers.model import Attachment, AttachmentRole, DocumentKind, FormReading, Location, Unreadable
from parsers.ocr import engine as ocr_engine
from parsers.ocr import ocr_pdf_pages
from parsers.outlook import read_msg, read_tnef
from parsers.pdf_reader import read_pdf
from parsers.sniff import DOCUMENT_KINDS, extension_of, is_encrypted_ole, sniff
from parsers.spec import FormSpec
from parsers.word97.document import read_doc, refuse_if_encrypted

log = logging.getLogger(__name__)

Reading = FormReading | Unreadable | None
_CONVERTED: dict[DocumentKind, str] = {"rtf": "rtf", "odt": "odt"}
_LEGACY_WORD: frozenset[DocumentKind] = frozenset({"doc", "wps"})
_ARCHIVES: dict[DocumentKind, ArchiveKind] = {"zip": "zip", "7z": "7z", "rar": "rar"}
_CONTAINERS: frozenset[DocumentKind] = frozenset({*_ARCHIVES, "tnef", "msg"})
_OCR_NOTE = "no text layer; read by OCR"
_FORM_NAME = re.compile(r"申报|申请|表|proposal|application|form|模板", re.IGNORECASE)


@dataclass(frozen=True)
class Examined:
    attachment: Attachment
    reading: Reading
    diagnostics: tuple[str, ...] = ()
    # the sender of the mail the file came inside (an attached Outlook item), "" for the message's own
    original_sender: str = ""

    @property
    def by_ocr(self) -> bool:
        return any(_OCR_NOTE in line for line in self.diagnostics)


def examine(
    data: bytes,
    filename: str,
    spec: FormSpec,
    limits: Limits,
    *,
    declared_type: str = "",
    path: tuple[str, ...] = (),
    depth: int = 0,
) -> list[Examined]:
    """The file itself first, then (for an archive) every member, each with what was read from it."""
    kind = sniff(data, filename, declared_type)
    attachment = Attachment(
        filename=filename,
        declared_type=declared_type,
        kind=kind,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        path=path,
        role="document" if kind in DOCUMENT_KINDS else "other",
    )
    if kind not in DOCUMENT_KINDS:
        return [Examined(attachment, None)]
    if len(data) > limits.max_attachment_bytes:
        refused = Unreadable("too-large", filename, f"{len(data)} bytes (limit {limits.max_attachment_bytes})")
        return [Examined(replace(attachment, role="refused", note=refused.detail), refused)]
    if kind in _CONTAINERS:
        return _examine_container(data, attachment, spec, limits, depth)
    diagnostics: list[str] = []
    try:
        reading = _read_single(data, attachment, spec, limits, diagnostics)
    except CannotRead as exc:
        reading = exc.reason
    except MemoryError:
        reading = Unreadable("too-large", filename, "the reader ran out of memory")
    except RecursionError:
        reading = Unreadable("corrupt", filename, "the document nests too deeply")
    except Exception as exc:  # a reader library failing on a hostile file must not end the message
        log.warning("%s: reader failed: %s: %s", filename, type(exc).__name__, exc)
        reading = Unreadable("corrupt", filename, f"the reader failed: {type(exc).__name__}: {exc}"[:300])
    if isinstance(reading, Unreadable):
        role: AttachmentRole = "refused" if reading.reason in ("too-large", "archive-refused") else "document"
        attachment = replace(attachment, role=role, note=f"{reading.reason}: {reading.detail}"[:300])
    return [Examined(attachment, reading, tuple(diagnostics))]


def _read_single(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, diagnostics: list[str]
) -> Reading:
    name, kind = attachment.filename, attachment.kind
    if is_encrypted_ole(data):
        return Unreadable("encrypted", name, "the Office document is password-protected")
    if kind in _LEGACY_WORD:
        return _read_legacy_word(data, attachment, spec, limits, diagnostics)
    if kind in _CONVERTED:
        converted = convert(data, _CONVERTED[kind], "docx", name, limits.convert_timeout_s)
        diagnostics.append(f"{name}: converted from .{kind} by LibreOffice")
        return _read_docx_form(converted, attachment, spec, limits, diagnostics)
    if kind == "docx":
        return _read_docx_form(data, attachment, spec, limits, diagnostics)
    if kind == "pdf":
        return _read_pdf_form(data, attachment, spec, limits, diagnostics)
    return None


def _read_docx_form(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, diagnostics: list[str]
) -> Reading:
    text = read_docx(data, attachment.filename, limits)
    diagnostics.extend(text.diagnostics)
    return _form(text.blocks, attachment, spec)


def _read_legacy_word(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, diagnostics: list[str]
) -> Reading:
    """A .doc or .wps: LibreOffice's conversion when it is there and chosen, else (or when it fails) natively."""
    name, kind = attachment.filename, attachment.kind
    chosen = limits.legacy_word
    if chosen == "libreoffice" or (chosen == "auto" and office_binary() is not None):
        refuse_if_encrypted(data, name)  # LibreOffice would call a password-protected file broken
        try:
            converted = convert(data, kind, "docx", name, limits.convert_timeout_s)
        except CannotRead as exc:
            if chosen == "libreoffice":
                raise
            diagnostics.append(f"{name}: LibreOffice did not convert it ({exc.reason.reason}); read natively")
        else:
            diagnostics.append(f"{name}: converted from .{kind} by LibreOffice")
            return _read_docx_form(converted, attachment, spec, limits, diagnostics)
    text = read_doc(data, name, limits)
    diagnostics.extend(text.diagnostics)
    return _form(text.blocks, attachment, spec)


def _read_pdf_form(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, diagnostics: list[str]
) -> Reading:
    try:
        text = read_pdf(data, attachment.filename, spec, limits)
    except CannotRead as exc:
        if exc.reason.reason != "scanned" or ocr_engine() is None:
            raise
        return _read_by_ocr(data, attachment, spec, limits, diagnostics, exc.reason)
    diagnostics.extend(text.diagnostics)
    return _form(text.blocks, attachment, spec)


def _read_by_ocr(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, diagnostics: list[str], scanned: Unreadable
) -> Reading:
    pages = ocr_pdf_pages(data, limits.ocr_max_pages, limits.convert_timeout_s)
    blocks: list[Block] = [
        Line(line, Location(attachment.filename, page=number, paragraph=row))
        for number, page in enumerate(pages, start=1)
        for row, line in enumerate(page.splitlines(), start=1)
        if line.strip()
    ]
    diagnostics.append(f"{attachment.filename}: {_OCR_NOTE} ({ocr_engine()})")
    reading = _form(blocks, attachment, spec)
    return reading if isinstance(reading, FormReading) else scanned


def _form(blocks: list[Block], attachment: Attachment, spec: FormSpec) -> Reading:
    return read_form(blocks, spec, attachment=attachment.filename, sha256=attachment.sha256, kind=attachment.kind)


def _open_container(data: bytes, attachment: Attachment, limits: Limits) -> tuple[list[Member], str]:
    """The files inside and, for an Outlook item, the address it came from."""
    kind = attachment.kind
    if kind in _ARCHIVES:
        return read_archive(data, attachment.filename, _ARCHIVES[kind], limits), ""
    item = (read_tnef if kind == "tnef" else read_msg)(data, attachment.filename, limits)
    return item.members, item.sender


def _examine_container(
    data: bytes, attachment: Attachment, spec: FormSpec, limits: Limits, depth: int
) -> list[Examined]:
    if depth >= limits.archive_max_depth:
        refused = Unreadable("archive-refused", attachment.filename, "an archive nested too deeply")
        return [Examined(replace(attachment, role="refused", note=refused.detail), refused)]
    try:
        members, sender = _open_container(data, attachment, limits)
    except CannotRead as exc:
        role: AttachmentRole = "refused" if exc.reason.reason == "archive-refused" else "document"
        return [Examined(replace(attachment, role=role, note=exc.reason.detail), exc.reason)]
    found = [Examined(attachment, None, (f"{attachment.filename}: {len(members)} files inside",))]
    for member in members:
        member_path = (*attachment.path, member.stored_name)
        if member.data is None:
            refused = member.refused or Unreadable("archive-refused", member.name)
            held = Attachment(member.name, "", "other", 0, "", member_path, "refused", refused.detail)
            found.append(Examined(held, refused, original_sender=sender))
            continue
        inside = examine(member.data, member.name, spec, limits, path=member_path, depth=depth + 1)
        found.extend(replace(item, original_sender=item.original_sender or sender) for item in inside)
    return found


def best_reading(examined: list[Examined]) -> tuple[FormReading | None, tuple[FormReading, ...], Unreadable | None]:
    """The form (the best match), the other forms, and the reason when no form could be read."""
    read = [(item, item.reading) for item in examined if isinstance(item.reading, FormReading)]
    # a form's own text beats what OCR made of a scan of it (the signed copy sent alongside)
    read.sort(
        key=lambda pair: (
            not pair[0].by_ocr,
            pair[1].score,
            sum(value is not None for value in pair[1].values().values()),
        ),
        reverse=True,
    )
    forms = [form for _, form in read]
    if forms:
        return forms[0], tuple(forms[1:]), None
    unreadable = [item for item in examined if isinstance(item.reading, Unreadable)]
    if not unreadable:
        return None, (), None
    unreadable.sort(key=lambda item: not _FORM_NAME.search(item.attachment.filename))
    chosen = unreadable[0].reading
    assert isinstance(chosen, Unreadable)
    return None, (), chosen


def read_document(data: bytes, filename: str, spec: FormSpec, limits: Limits | None = None) -> Reading:
    """The form in one file (a .docx, .pdf, .zip …), the reason it cannot be read, or None."""
    try:
        examined = examine(data, filename, spec, limits or Limits(), declared_type="")
    except Exception as exc:  # examine guards each reader; this is the last line for the CLI
        log.exception("%s: unexpected failure", filename)
        return Unreadable("corrupt", filename, f"unexpected failure: {type(exc).__name__}")
    form, _, unreadable = best_reading(examined)
    return form if form is not None else unreadable


__all__ = ["Examined", "best_reading", "examine", "extension_of", "read_document"]
