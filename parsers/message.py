"""One raw message to a Submission: envelope, every attachment examined, the best form chosen."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from parsers.documents import Examined, best_reading, examine
from parsers.forwarding import forwarding
from parsers.headers import EMPTY_ENVELOPE, content_type_of, read_headers
from parsers.limits import Limits
from parsers.mime import (
    attachment_name,
    envelope_of,
    is_attachment,
    leaves,
    parse,
    payload_bytes,
    read_envelope,
)
from parsers.model import Attachment, AttachmentRole, Envelope, Submission, Unreadable
from parsers.sniff import DOCUMENT_KINDS, sniff
from parsers.spec import FormSpec

log = logging.getLogger(__name__)

_EXTENSIONS = {
    "docx": "docx",
    "doc": "doc",
    "wps": "wps",
    "rtf": "rtf",
    "odt": "odt",
    "pdf": "pdf",
    "zip": "zip",
    "rar": "rar",
    "7z": "7z",
    "tnef": "dat",
    "msg": "msg",
    "text": "txt",
    "html": "html",
    "message": "eml",
    "image": "",
    "other": "",
}


def too_large(head: bytes, size: int, limits: Limits) -> Submission:
    """A message over the size limit, known from its header section alone (``head`` may be just that)."""
    detail = f"the message has {size} bytes (limit {limits.max_message_bytes})"
    return Submission(
        read_headers(head), unreadable=Unreadable("too-large", "(message)", detail), diagnostics=(detail,)
    )


def read_message(raw: bytes, spec: FormSpec, limits: Limits | None = None) -> Submission:
    """Everything read from one message. Never raises: bad input ends as a reason or a diagnostic."""
    limits = limits or Limits()
    if len(raw) > limits.max_message_bytes:
        return too_large(raw, len(raw), limits)
    envelope = EMPTY_ENVELOPE
    try:
        message = parse(raw)
        envelope = envelope_of(message, limits)
        examined: list[Examined] = []
        for leaf in leaves(message, limits):
            if not is_attachment(leaf.part):
                continue
            data = payload_bytes(leaf.part)
            declared = content_type_of(leaf.part)
            name = attachment_name(leaf.part, leaf.path, _EXTENSIONS[sniff(data, "", declared)])
            found = examine(data, name, spec, limits, declared_type=declared, path=leaf.path)
            if leaf.enclosed_from:
                found = [replace(item, original_sender=item.original_sender or leaf.enclosed_from) for item in found]
            examined.extend(found)
        return _submission(envelope, examined)
    except MemoryError:
        detail = "the reader ran out of memory"
        return Submission(envelope, unreadable=Unreadable("too-large", "(message)", detail), diagnostics=(detail,))
    except RecursionError:
        # the standard parser recurses once per nested part: hundreds of levels are an attack, not mail
        detail = "the message's parts are nested too deeply to read"
        if envelope is EMPTY_ENVELOPE:
            envelope = read_headers(raw)
        return Submission(envelope, unreadable=Unreadable("corrupt", "(message)", detail), diagnostics=(detail,))
    except Exception as exc:  # the readers guard themselves; this keeps a malformed message decidable
        log.exception("cannot read message %s", envelope.message_id)
        if envelope is EMPTY_ENVELOPE:
            envelope = read_envelope(raw, limits)
        return Submission(envelope, diagnostics=(f"reading the message failed: {type(exc).__name__}: {exc}"[:300],))


def _submission(envelope: Envelope, examined: list[Examined]) -> Submission:
    form, other_forms, unreadable = best_reading(examined)
    attachments = []
    diagnostics: list[str] = []
    forwarded_by, forwarded_from = None, None
    for item in examined:
        attachment = item.attachment
        if form is not None and item.reading is form:
            attachment = replace(attachment, role="form")
            forwarded_by, forwarded_from = forwarding(envelope, item.original_sender)
        attachments.append(attachment)
        diagnostics.extend(item.diagnostics)
        if isinstance(item.reading, Unreadable) and item.reading is not unreadable:
            diagnostics.append(f"{attachment.filename}: {item.reading.reason}: {item.reading.detail}"[:300])
    return Submission(
        envelope=envelope,
        attachments=tuple(attachments),
        form=form,
        unreadable=unreadable,
        other_forms=other_forms,
        diagnostics=tuple(diagnostics)
        + ((f"the form was forwarded by {forwarded_by} from {forwarded_from}",) if forwarded_by else ()),
        forwarded_by=forwarded_by,
        forwarded_from=forwarded_from,
    )


def extract_parts(raw: bytes, limits: Limits | None = None) -> list[tuple[Attachment, bytes]]:
    """The decoded attachments as sent (archives not opened), with safe names, for a review folder."""
    limits = limits or Limits()
    try:
        message = parse(raw)
        parts: list[tuple[Attachment, bytes]] = []
        for leaf in leaves(message, limits):
            if not is_attachment(leaf.part):
                continue
            data = payload_bytes(leaf.part)
            declared = content_type_of(leaf.part)
            kind = sniff(data, "", declared)
            name = attachment_name(leaf.part, leaf.path, _EXTENSIONS[kind])
            kind = sniff(data, name, declared)
            role: AttachmentRole = "document" if kind in DOCUMENT_KINDS else "other"
            digest = hashlib.sha256(data).hexdigest()
            parts.append((Attachment(name, declared, kind, len(data), digest, leaf.path, role), data))
        return parts
    except Exception:
        log.exception("cannot extract the parts of a message")
        return []
