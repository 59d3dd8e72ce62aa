"""What reading one message yields: its envelope, its attachments and the form's fields.

These frozen dataclasses are the contract between ``parsers`` (which fills them, possibly in a
worker process, so everything here pickles) and the rest of the pipeline (which decides on them
and stores them as JSON via :func:`to_jsonable`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

UnreadableReason = Literal[
    "encrypted",  # password-protected document
    "corrupt",  # truncated or broken file
    "scanned",  # image-only pages and no OCR engine (or OCR found no form)
    "garbled-text",  # text layer without a usable font mapping
    "unsupported-format",  # a format no installed reader handles (.rar, .7z, .doc without LibreOffice …)
    "too-large",  # over a size limit, or the reader ran out of its memory allowance
    "timeout",  # the reader ran out of time
    "archive-refused",  # an archive that looks like a zip bomb or holds unsafe members
    "no-fields",  # a document that looks like the form but no field could be read from it
    "ambiguous-call",  # at an address several calls share, the form matches more than one of them
]

UNREADABLE_REASONS: tuple[UnreadableReason, ...] = (
    "encrypted",
    "corrupt",
    "scanned",
    "garbled-text",
    "unsupported-format",
    "too-large",
    "timeout",
    "archive-refused",
    "no-fields",
    "ambiguous-call",
)

DocumentKind = Literal[
    "docx",
    "doc",
    "wps",
    "rtf",
    "odt",
    "pdf",
    "zip",
    "rar",
    "7z",
    "tnef",  # Outlook's winmail.dat
    "msg",  # an Outlook item
    "image",
    "text",
    "html",
    "message",
    "other",
]
AttachmentRole = Literal["form", "document", "other", "refused"]
FieldScalar = str | float | bool | None


@dataclass(frozen=True)
class Location:
    """Where a value was found, for reviewers and acknowledgements."""

    file: str
    page: int | None = None
    table: int | None = None
    row: int | None = None
    paragraph: int | None = None

    def describe(self) -> str:
        parts = [self.file]
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.table is not None:
            parts.append(f"table {self.table}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.paragraph is not None:
            parts.append(f"paragraph {self.paragraph}")
        return ", ".join(parts)


@dataclass(frozen=True)
class FieldValue:
    value: FieldScalar
    raw: str
    confidence: float
    where: Location


@dataclass(frozen=True)
class Attachment:
    filename: str  # decoded, safe to display (control characters removed)
    declared_type: str
    kind: DocumentKind  # sniffed from the content, not the name
    size: int
    sha256: str
    path: tuple[str, ...]  # MIME part numbers and archive member names that lead to it
    role: AttachmentRole = "other"
    note: str = ""


@dataclass(frozen=True)
class FormReading:
    attachment: str
    sha256: str
    kind: DocumentKind
    fields: dict[str, FieldValue]
    missing: tuple[str, ...]  # required fields with no value
    score: float  # how strongly the document matched the call's labels (0..1)
    cut: tuple[str, ...] = ()  # values cut at their length cap when read, in words ("institution: …")

    def value(self, name: str) -> FieldScalar:
        found = self.fields.get(name)
        return found.value if found else None

    def values(self) -> dict[str, FieldScalar]:
        return {name: fv.value for name, fv in self.fields.items()}


@dataclass(frozen=True)
class Unreadable:
    reason: UnreadableReason
    attachment: str
    detail: str = ""  # diagnostics for admins


@dataclass(frozen=True)
class Envelope:
    message_id: str | None
    subject: str
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    return_path: str | None  # None when absent; "" for the null sender <>
    content_type: str  # top-level media type, lower case
    report_type: str | None  # multipart/report's report-type
    headers: dict[str, str]  # selected headers by lower-case name (Auto-Submitted, Precedence, List-Id …)
    body_text: str  # the readable text of the body (HTML converted), bounded in length
    received_times: tuple[datetime, ...]  # from Received: headers, newest first
    bounced_message_ids: tuple[str, ...] = ()  # Message-IDs quoted by a delivery report
    defects: tuple[str, ...] = ()
    # every Authentication-Results, Delivered-To, X-Original-To and spam-verdict header, top first:
    # (lower-case name, value); who added them decides whether they count (mailbot.security)
    trace: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Submission:
    """Everything read from one message."""

    envelope: Envelope
    attachments: tuple[Attachment, ...] = ()
    form: FormReading | None = None
    unreadable: Unreadable | None = None  # set when a document looked like the form but could not be read
    other_forms: tuple[FormReading, ...] = ()  # further readable forms in the same mail
    diagnostics: tuple[str, ...] = field(default_factory=tuple)
    # the form came in a mail someone else wrote first (a secretary forwarding a professor's submission):
    # who forwarded it (the sender of this message) and, where the forward says, who wrote the original
    forwarded_by: str | None = None
    forwarded_from: str | None = None
    # at an address several calls share: the call whose form this is (mailbot.routing chose it)
    routed_call: str | None = None

    @property
    def status(self) -> Literal["form", "unreadable", "no_form"]:
        if self.form is not None:
            return "form"
        if self.unreadable is not None:
            return "unreadable"
        return "no_form"


_PLAIN = (str, int, float, type(None))  # bool is an int


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and datetimes as plain JSON values (for storage and ``--json``)."""
    if isinstance(value, _PLAIN):  # most of a reading's values: answered before the costlier checks
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
