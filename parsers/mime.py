"""The message itself: decoded headers, the envelope, the readable body and the attached parts.

Mail from Chinese clients mislabels charsets often (GB2312 text holding GBK characters, UTF-8
declared as GB2312, raw 8-bit bytes in headers), so every decode tries the declared charset's
superset and the usual suspects before falling back to replacement characters. Nothing here raises
on malformed input: a header that cannot be understood is left empty.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.utils
import logging
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32
from html.parser import HTMLParser

from parsers.limits import Limits
from parsers.model import Envelope
from parsers.textnorm import safe_filename, safe_text

log = logging.getLogger(__name__)

_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "windows-936": "gb18030",
    "x-euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "iso-8859-8-i": "iso-8859-8",
}
_CHARSET_NAME = re.compile(r"[a-z0-9][a-z0-9!#$%&'+^_`{}~.:-]*")  # RFC 2978's characters, case folded
_SEVEN_BIT_FIRST = ("iso-2022", "utf-7", "hz", "utf-16", "utf-32")
# tried after UTF-8 and the declared charset, in this order
_FALLBACKS = ("gb18030", "big5hkscs")
_WESTERN = ("cp1252", "latin-1")
_EIGHT_BIT_RUN = re.compile(rb"[\x80-\xff]+")
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
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "pre", "hr"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})


# Blank or blank-looking lines before the first header field: damage (a copy that kept the empty
# line after an mbox "From " line, a line of spaces), since RFC 5322 has the header fields first.
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t]*(?:\r\n|\n|\r))+(?=[!-9;-~]+[ \t]*:)")


def parse(raw: bytes) -> Message:
    """The message; blank lines in front of its header fields are skipped, so the headers stay headers."""
    return email.parser.BytesParser(policy=compat32).parsebytes(_LEADING_BLANK_LINES.sub(b"", raw, count=1))


def header_block(raw: bytes) -> bytes:
    """The top-level header section: reading headers never has to touch a large body."""
    ends = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0]
    return raw[: min(ends) + 2] if ends else raw


def parse_headers_only(raw: bytes) -> Message:
    return email.parser.BytesParser(policy=compat32).parsebytes(header_block(raw), headersonly=True)


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Text from bytes whose declared charset may be absent, unknown or wrong."""
    charset = _charset(declared)
    if charset and charset.startswith(_SEVEN_BIT_FIRST):
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    if data.isascii():
        return data.decode("ascii")
    fallbacks = _WESTERN if charset is None and _looks_western(data) else _FALLBACKS
    for candidate in ("utf-8", charset, *fallbacks):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _looks_western(data: bytes) -> bool:
    """Undeclared 8-bit text whose every 8-bit byte stands alone between ASCII ones ("M\xfcller").

    That is a Latin-1 or Windows-1252 letter inside a word. In GBK text the common characters are
    two 8-bit bytes; a lone one is the lead of a rare character, and text made only of those does
    not occur, while GB18030 would turn the Latin letter and the ASCII after it into a CJK character.
    """
    runs = _EIGHT_BIT_RUN.findall(data)
    return bool(runs) and all(len(run) == 1 for run in runs)


def _charset(declared: str | None) -> str | None:
    if not declared:
        return None
    name = declared.strip().strip('"').casefold()
    if not _CHARSET_NAME.fullmatch(name):
        return None  # no charset has such a name, and a NUL in it makes the codec lookup raise ValueError
    return _CHARSET_ALIASES.get(name, name)


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
    for key, value in message.raw_items():
        if key.casefold() == name:
            return str(value)
    return None


def all_headers(message: Message, name: str) -> list[str]:
    return [str(value) for key, value in message.raw_items() if key.casefold() == name]


def _addresses(raw_values: list[str]) -> list[tuple[str, str]]:
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


def _received_times(message: Message) -> tuple[datetime, ...]:
    times = []
    for raw in all_headers(message, "received"):
        stamp = _date(raw.rsplit(";", 1)[-1]) if ";" in raw else None
        if stamp is not None:
            times.append(stamp)
    return tuple(times)


def _message_ids(raw: str | None) -> tuple[str, ...]:
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
    try:
        return part.get_content_type().casefold()
    except (ValueError, TypeError, AttributeError, IndexError):
        return "text/plain"


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
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


def filename_of(part: Message) -> str | None:
    """The part's file name: RFC 2231, RFC 2047 inside a quoted name, or raw UTF-8 / GBK bytes."""
    for header, name in (("content-disposition", "filename"), ("content-type", "name")):
        found = _param(part, name, header)
        if found and found.strip():
            return found
    return None


def is_attachment(part: Message) -> bool:
    if part.is_multipart():
        return False
    content_type = content_type_of(part)
    if content_type.startswith("message/") or content_type in ("text/rfc822-headers",):
        return False
    disposition = (first_header(part, "content-disposition") or "").strip().casefold()
    if filename_of(part) or disposition.startswith("attachment"):
        return True
    return not content_type.startswith(("text/", "multipart/"))


@dataclass(frozen=True)
class Leaf:
    part: Message
    path: tuple[str, ...]
    enclosed_from: str = ""  # sender of the innermost enclosed message (message/rfc822) holding it, if any


def leaves(message: Message, limits: Limits) -> Iterator[Leaf]:
    """Every non-multipart part in order, with its MIME part number, within depth and count limits."""
    count = 0
    stack: list[tuple[Message, tuple[str, ...], int, str]] = [(message, (), 0, "")]
    while stack:
        part, path, depth, enclosed_from = stack.pop()
        count += 1
        if count > limits.max_mime_parts:
            log.info("message has more than %d MIME parts; the rest is ignored", limits.max_mime_parts)
            return
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            if depth >= limits.max_mime_depth:
                continue
            children = [child for child in payload if isinstance(child, Message)]
            if content_type_of(part).startswith("message/"):
                # an enclosed message takes its part's number: 2.1 is the first part inside part 2
                for child in children[:1]:
                    senders = _addresses(all_headers(child, "from"))
                    stack.append((child, path, depth + 1, senders[0][1] if senders else enclosed_from))
                continue
            for number in range(len(children), 0, -1):
                stack.append((children[number - 1], (*path, str(number)), depth + 1, enclosed_from))
            continue
        yield Leaf(part, path or ("1",), enclosed_from)


def payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError, LookupError):
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return header_bytes(raw) if isinstance(raw, str) else b""


def part_text(part: Message) -> str:
    charset = None
    with contextlib.suppress(ValueError, TypeError, LookupError):
        charset = part.get_content_charset()
    return decode_bytes(payload_bytes(part), charset)


class _TextOfHtml(HTMLParser):
    """The text of an HTML body; what a <blockquote> quotes gets "> " in front, as plain-text mail has it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str, int]] = []  # text and how deeply it is quoted
        self._skipping = 0
        self._quoting = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.pieces.append(("\n", 0))
            if tag == "blockquote":
                self._quoting += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.pieces.append(("\n", 0))
            if tag == "blockquote":
                self._quoting = max(0, self._quoting - 1)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.pieces.append((data, self._quoting))

    def text(self) -> str:
        """The pieces as lines; a line with quoted text in it is marked as deeply as that text is quoted."""
        lines: list[str] = []
        words: list[str] = []
        depth = 0
        for piece, quoted in self.pieces:
            for index, part in enumerate(piece.split("\n")):
                if index:  # a line ends
                    lines.append(_quote_marked("".join(words), depth))
                    words, depth = [], 0
                words.append(part)
                if part.strip():
                    depth = max(depth, quoted)
        lines.append(_quote_marked("".join(words), depth))
        return "\n".join(lines)


def _quote_marked(line: str, depth: int) -> str:
    return "> " * depth + line if line.strip() else ""


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        pass
    text = parser.text().replace("\xa0", " ")
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def body_text(message: Message, limits: Limits) -> str:
    """The readable text of the body: the first text/plain, else the first HTML converted."""
    plain: str | None = None
    html: str | None = None
    for leaf in _body_leaves(message, limits):
        content_type = content_type_of(leaf)
        if content_type == "text/plain" and plain is None:
            plain = part_text(leaf)
        elif content_type == "text/html" and html is None:
            html = part_text(leaf)
        if plain is not None:
            break
    text = plain if plain is not None and (plain.strip() or html is None) else html_to_text(html or "")
    text = "".join(char for char in text if char in "\n\t" or char.isprintable())
    return text.replace("\r\n", "\n")[: limits.body_text_chars]


def _body_leaves(message: Message, limits: Limits) -> Iterator[Message]:
    """Text parts of the message's own body: not attachments and not inside an enclosed message."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > limits.max_mime_depth:
            continue
        if part.is_multipart():
            if content_type_of(part).startswith("message/"):
                continue
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
            continue
        disposition = (first_header(part, "content-disposition") or "").strip().casefold()
        if (
            content_type_of(part).startswith("text/")
            and not disposition.startswith("attachment")
            and not filename_of(part)
        ):
            yield part


def _bounced_ids(message: Message, limits: Limits) -> tuple[str, ...]:
    found: list[str] = []
    for leaf in leaves(message, limits):
        if content_type_of(leaf.part) == "text/rfc822-headers":
            headers = parse_headers_only(payload_bytes(leaf.part))
            found.extend(_message_ids(first_header(headers, "message-id"))[:1])
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload() if part.is_multipart() else None
        if not isinstance(payload, list):
            continue
        if content_type_of(part) in ("message/rfc822", "message/global"):
            for enclosed in payload[:1]:
                if isinstance(enclosed, Message):
                    found.extend(_message_ids(first_header(enclosed, "message-id"))[:1])
        stack.extend(child for child in payload if isinstance(child, Message))
    return tuple(dict.fromkeys(found))


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


def envelope_of(message: Message, limits: Limits, *, with_body: bool = True) -> Envelope:
    senders = _addresses(all_headers(message, "from"))
    from_name, from_addr = senders[0] if senders else ("", "")
    content_type = content_type_of(message)
    report_type = _param(message, "report-type") if content_type == "multipart/report" else None
    headers = {}
    for name in KEPT_HEADERS:
        raw = first_header(message, name)
        if raw is not None:
            headers[name] = safe_text(decode_header_text(raw)).strip()
    message_ids = _message_ids(first_header(message, "message-id"))
    defects = tuple(dict.fromkeys(type(defect).__name__ for defect in getattr(message, "defects", ())))
    return Envelope(
        message_id=message_ids[0] if message_ids else None,
        subject=safe_text(decode_header_text(first_header(message, "subject") or "")).strip(),
        from_addr=from_addr,
        from_name=from_name,
        to=tuple(address for _, address in _addresses(all_headers(message, "to"))),
        cc=tuple(address for _, address in _addresses(all_headers(message, "cc"))),
        reply_to=tuple(address for _, address in _addresses(all_headers(message, "reply-to"))),
        date=_date(first_header(message, "date")),
        in_reply_to=_message_ids(first_header(message, "in-reply-to")),
        references=_message_ids(" ".join(all_headers(message, "references"))),
        return_path=_return_path(first_header(message, "return-path")),
        content_type=content_type,
        report_type=report_type.casefold() if report_type else None,
        headers=headers,
        body_text=body_text(message, limits) if with_body else "",
        received_times=_received_times(message),
        bounced_message_ids=_bounced_ids(message, limits) if with_body and content_type == "multipart/report" else (),
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


def read_envelope(raw: bytes, limits: Limits | None = None) -> Envelope:
    """The envelope alone, cheaply: headers only when the message is over the size limit. Never raises."""
    limits = limits or Limits()
    try:
        if len(raw) > limits.max_message_bytes:
            return read_headers(raw, limits)
        return envelope_of(parse(raw), limits)
    except RecursionError:  # parts nested hundreds deep: the headers still say who sent it
        log.info("the message's parts are nested too deeply; reading its headers only")
    except Exception:  # a last resort: the parser and decoders above already tolerate malformed mail
        log.exception("cannot read the envelope")
    return read_headers(raw, limits)


def read_headers(raw: bytes, limits: Limits) -> Envelope:
    """The envelope from the top-level headers alone (no body, no parts). Never raises."""
    try:
        return envelope_of(parse_headers_only(raw), limits, with_body=False)
    except Exception:
        log.exception("cannot read the headers")
        return EMPTY_ENVELOPE


def attachment_name(part: Message, path: tuple[str, ...], extension: str) -> str:
    name = filename_of(part)
    fallback = f"part-{'.'.join(path)}" + (f".{extension}" if extension else "")
    return safe_filename(name or "", fallback)
