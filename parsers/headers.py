"""The one reader of a header block: for intake, storage and the envelope of a read message alike.

A header section is read without touching the body: folding undone, raw 8-bit bytes and RFC 2047
encoded words decoded through the charset guesses of :mod:`parsers.charsets`, and the facts the
bot acts on (Message-ID, In-Reply-To, References, From, To, Cc, Subject, Date, Received stamps,
the list and auto-reply markers) taken out. Nothing here raises on malformed input: a header that
cannot be understood is left empty.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.utils
import logging
import quopri
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32

from parsers.charsets import decode_bytes
from parsers.model import Envelope
from parsers.textnorm import safe_text

log = logging.getLogger(__name__)

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# RFC 2369 / RFC 2919 list header fields, and the list managers' own (ezmlm and Yahoo Groups
# write Mailing-List:, fml X-MLServer:/X-ML-Name:, Mailman X-Mailman-Version: and
# X-List-Administrivia:, ListProc X-ListProcessor-Version:, Lyris/others X-Listserver:): a list's copy
# of a post carries at least one of them, and the list, not the poster, would get the answer.
LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-owner",
    "list-archive",
    "mailing-list",
    "x-mailman-version",
    "x-mlserver",
    "x-ml-name",
    "x-list-administrivia",
    "x-listprocessor-version",
    "x-listserver",
)

KEPT_HEADERS = (
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "x-autoresponse",
    "x-auto-response-suppress",
    "precedence",
    "x-precedence",
    *LIST_HEADERS,
    "x-mailer",
    "user-agent",
    "x-loop",
    "content-type",
    "delivered-to",
    "x-original-to",
    "sender",
    "x-failed-recipients",
    "feedback-id",
    "x-spam-flag",
    "x-ms-exchange-generated-message-source",
    "thread-topic",
)


# Blank or blank-looking lines before the first header field: damage (a copy that kept the empty
# line after an mbox "From " line, a line of spaces), since RFC 5322 has the header fields first.
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t]*(?:\r\n|\n|\r))+(?=[!-9;-~]+[ \t]*:)")


def without_leading_blank_lines(raw: bytes) -> bytes:
    """The message from its first header field on, so the headers stay headers."""
    return _LEADING_BLANK_LINES.sub(b"", raw, count=1)


def header_block(raw: bytes) -> bytes:
    """The top-level header section: reading headers never has to touch a large body."""
    raw = without_leading_blank_lines(raw)
    ends = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0]
    return raw[: min(ends) + 2] if ends else raw


def parse_headers_only(raw: bytes) -> Message:
    """The top-level header section as a message with no body; the body is never parsed."""
    return email.parser.BytesParser(policy=compat32).parsebytes(header_block(raw), headersonly=True)


def header_bytes(value: object) -> bytes:
    """A header's raw bytes (the parser keeps undecodable 8-bit bytes as surrogate escapes)."""
    return str(value).encode("utf-8", "surrogateescape")


def decode_header_text(value: object) -> str:
    """Unfolded, 8-bit bytes and RFC 2047 encoded words decoded; adjacent words joined."""
    text = decode_bytes(header_bytes(value))
    text = _FOLD.sub("", text)
    pieces: list[str] = []
    pending: tuple[str, bytearray] | None = None
    last = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[last : match.start()]
        if pending is not None and between.strip():
            pieces.append(decode_bytes(bytes(pending[1]), pending[0]))
            pending = None
        if pending is None or between.strip():
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        data = _decode_word(match.group(2), match.group(3))
        if pending is not None and pending[0].casefold() == charset.casefold():
            pending[1].extend(data)
        else:
            if pending is not None:
                pieces.append(decode_bytes(bytes(pending[1]), pending[0]))
            pending = (charset, bytearray(data))
        last = match.end()
    if pending is not None:
        pieces.append(decode_bytes(bytes(pending[1]), pending[0]))
    pieces.append(text[last:])
    return "".join(pieces)


def _decode_word(encoding: str, payload: str) -> bytes:
    if encoding in "bB":
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload)
        try:
            return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            return payload.encode("ascii", "replace")
    return quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=True)


def first_header(message: Message, name: str) -> str | None:
    """The first field of that (case-folded) name, undecoded; None when there is none."""
    for key, value in message.raw_items():
        if key.casefold() == name:
            return str(value)
    return None


def all_headers(message: Message, name: str) -> list[str]:
    """Every field of that (case-folded) name, undecoded, in order."""
    return [str(value) for key, value in message.raw_items() if key.casefold() == name]


def addresses(raw_values: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-case address) of every address in the fields; a field the parser
    cannot split still gives the addresses found in it."""
    found: list[tuple[str, str]] = []
    for raw in raw_values:
        text = _FOLD.sub("", decode_bytes(header_bytes(raw)))
        try:
            pairs = email.utils.getaddresses([text])
        except (ValueError, TypeError, IndexError):
            pairs = []
        for name, address in pairs:
            address = address.strip().strip("<>").lower()
            if "@" not in address:
                continue
            found.append((safe_text(decode_header_text(name)).strip(), safe_text(address)))
        if not pairs:
            found.extend(("", match.lower()) for match in re.findall(r"[\w.+\-]+@[\w.\-]+", text))
    return found


def _date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(_FOLD.sub("", decode_bytes(header_bytes(raw))).strip())
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def received_times(message: Message) -> tuple[datetime, ...]:
    """The time stamps after the last ';' of the Received: fields that have one, topmost first."""
    times = []
    for raw in all_headers(message, "received"):
        stamp = _date(raw.rsplit(";", 1)[-1]) if ";" in raw else None
        if stamp is not None:
            times.append(stamp)
    return tuple(times)


def message_ids(raw: str | None) -> tuple[str, ...]:
    """The <…> identifiers in a Message-ID, In-Reply-To or References field, in order."""
    if not raw:
        return ()
    return tuple(_MESSAGE_ID.findall(decode_bytes(header_bytes(raw))))


def _return_path(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = decode_bytes(header_bytes(raw)).strip()
    inner = text[text.find("<") + 1 : text.rfind(">")] if "<" in text and ">" in text else text
    return inner.strip().lower()


def content_type_of(part: Message) -> str:
    """The part's MIME type, case-folded; text/plain when its Content-Type cannot be read."""
    try:
        return part.get_content_type().casefold()
    except (ValueError, TypeError, AttributeError, IndexError):
        return "text/plain"


def header_param(part: Message, name: str, header: str = "content-type") -> str | None:
    """A parameter of a Content-Type or Content-Disposition field, decoded (RFC 2231, RFC 2047, 8-bit)."""
    raw = first_header(part, header)
    if raw is None:
        return None
    source = part
    if not raw.isascii():  # raw 8-bit bytes: decode them first, the parser would replace them
        source = Message()
        source[header] = _FOLD.sub("", decode_bytes(header_bytes(raw)))
    try:
        value = source.get_param(name, header=header)
    except (ValueError, TypeError, AttributeError, IndexError, LookupError):
        return None
    if value is None:
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as Latin-1 code points)
        charset, _, text = value
        try:
            encoded = bytes(str(text), "raw-unicode-escape")
        except UnicodeEncodeError:
            encoded = header_bytes(text)
        return decode_bytes(encoded, charset or None)
    return decode_header_text(email.utils.unquote(str(value)))


_TRACE_NAMES = frozenset({"authentication-results", "delivered-to", "x-original-to"})
MAX_TRACE_HEADERS = 40
MAX_TRACE_CHARS = 1000


def _trace(message: Message) -> tuple[tuple[str, str], ...]:
    """The headers that say how the message reached us, bounded in number and length."""
    found: list[tuple[str, str]] = []
    for key, value in message.raw_items():
        name = key.casefold().strip()
        if name in _TRACE_NAMES or "spam" in name:
            found.append(
                (name, safe_text(decode_header_text(str(value)[: 4 * MAX_TRACE_CHARS]))[:MAX_TRACE_CHARS].strip())
            )
            if len(found) >= MAX_TRACE_HEADERS:
                break
    return tuple(found)


def envelope_of_headers(message: Message) -> Envelope:
    """Everything the header section says; the body's text and a report's quoted IDs stay empty."""
    senders = addresses(all_headers(message, "from"))
    from_name, from_addr = senders[0] if senders else ("", "")
    content_type = content_type_of(message)
    report_type = header_param(message, "report-type") if content_type == "multipart/report" else None
    headers = {}
    for name in KEPT_HEADERS:
        raw = first_header(message, name)
        if raw is not None:
            headers[name] = safe_text(decode_header_text(raw)).strip()
    ids = message_ids(first_header(message, "message-id"))
    defects = tuple(dict.fromkeys(type(defect).__name__ for defect in getattr(message, "defects", ())))
    return Envelope(
        message_id=ids[0] if ids else None,
        subject=safe_text(decode_header_text(first_header(message, "subject") or "")).strip(),
        from_addr=from_addr,
        from_name=from_name,
        to=tuple(address for _, address in addresses(all_headers(message, "to"))),
        cc=tuple(address for _, address in addresses(all_headers(message, "cc"))),
        reply_to=tuple(address for _, address in addresses(all_headers(message, "reply-to"))),
        date=_date(first_header(message, "date")),
        in_reply_to=message_ids(first_header(message, "in-reply-to")),
        references=message_ids(" ".join(all_headers(message, "references"))),
        return_path=_return_path(first_header(message, "return-path")),
        content_type=content_type,
        report_type=report_type.casefold() if report_type else None,
        headers=headers,
        body_text="",
        received_times=received_times(message),
        defects=defects,
        trace=_trace(message),
    )


EMPTY_ENVELOPE = Envelope(
    message_id=None,
    subject="",
    from_addr="",
    from_name="",
    to=(),
    cc=(),
    reply_to=(),
    date=None,
    in_reply_to=(),
    references=(),
    return_path=None,
    content_type="",
    report_type=None,
    headers={},
    body_text="",
    received_times=(),
)


def read_headers(raw: bytes) -> Envelope:
    """The envelope from the top-level headers alone (no body, no parts). Never raises."""
    try:
        return envelope_of_headers(parse_headers_only(raw))
    except Exception:
        log.exception("cannot read the headers")
        return EMPTY_ENVELOPE


# RFC 5322 section 2.1.1: no line of a message is longer; nothing recorded from a header needs more
MAX_HEADER_TEXT = 998


@dataclass(frozen=True)
class HeaderFacts:
    """The few header values intake records with a message, as the envelope reads them."""

    message_id: str | None
    subject: str  # whitespace runs made one space, for one-line listings
    from_addr: str
    recipients: tuple[str, ...]  # To, then Cc: which call's address the message was sent to


def header_facts(raw: bytes) -> HeaderFacts:
    """The facts recorded at intake, read by the same reader as the envelope, without the body."""
    return facts_of(read_headers(raw))


def facts_of(envelope: Envelope) -> HeaderFacts:
    """The facts intake records, from an envelope already read (``read_headers``)."""
    return HeaderFacts(
        message_id=envelope.message_id[:MAX_HEADER_TEXT] if envelope.message_id else None,
        subject=" ".join(envelope.subject.split())[:MAX_HEADER_TEXT],
        from_addr=envelope.from_addr[:MAX_HEADER_TEXT],
        recipients=(*envelope.to, *envelope.cc),
    )


def message_id_in(raw: bytes) -> str | None:
    """The Message-ID of a header section, as ``header_facts`` reads it, and nothing else: for
    the IMAP summary of every new message, which fetches that one header field."""
    try:
        ids = message_ids(first_header(parse_headers_only(raw), "message-id"))
    except Exception:
        log.exception("cannot read the Message-ID")
        return None
    return ids[0][:MAX_HEADER_TEXT] if ids else None
