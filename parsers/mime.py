"""The message's body and parts: the MIME walk, the readable body text and the attached parts.

Its header sections are read by :mod:`parsers.headers`. Nothing here raises on malformed input.
"""

from __future__ import annotations

import contextlib
import email.parser
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import Message
from email.policy import compat32
from html.parser import HTMLParser

from parsers.charsets import decode_bytes
from parsers.headers import (
    addresses,
    all_headers,
    content_type_of,
    envelope_of_headers,
    first_header,
    header_bytes,
    header_param,
    message_ids,
    parse_headers_only,
    read_headers,
    without_leading_blank_lines,
)
from parsers.limits import Limits
from parsers.model import Envelope
from parsers.textnorm import safe_filename

log = logging.getLogger(__name__)

_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "pre", "hr"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})


def parse(raw: bytes) -> Message:
    """The message; blank lines in front of its header fields are skipped, so the headers stay headers."""
    return email.parser.BytesParser(policy=compat32).parsebytes(without_leading_blank_lines(raw))


def filename_of(part: Message) -> str | None:
    """The part's file name: RFC 2231, RFC 2047 inside a quoted name, or raw UTF-8 / GBK bytes."""
    for header, name in (("content-disposition", "filename"), ("content-type", "name")):
        found = header_param(part, name, header)
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
                    senders = addresses(all_headers(child, "from"))
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
            found.extend(message_ids(first_header(headers, "message-id"))[:1])
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload() if part.is_multipart() else None
        if not isinstance(payload, list):
            continue
        if content_type_of(part) in ("message/rfc822", "message/global"):
            for enclosed in payload[:1]:
                if isinstance(enclosed, Message):
                    found.extend(message_ids(first_header(enclosed, "message-id"))[:1])
        stack.extend(child for child in payload if isinstance(child, Message))
    return tuple(dict.fromkeys(found))


def envelope_of(message: Message, limits: Limits) -> Envelope:
    """What the headers say, with the body's readable text and the Message-IDs a delivery report quotes."""
    envelope = envelope_of_headers(message)
    bounced = _bounced_ids(message, limits) if envelope.content_type == "multipart/report" else ()
    return replace(envelope, body_text=body_text(message, limits), bounced_message_ids=bounced)


def read_envelope(raw: bytes, limits: Limits | None = None) -> Envelope:
    """The envelope alone, cheaply: headers only when the message is over the size limit. Never raises."""
    limits = limits or Limits()
    try:
        if len(raw) > limits.max_message_bytes:
            return read_headers(raw)
        return envelope_of(parse(raw), limits)
    except RecursionError:  # parts nested hundreds deep: the headers still say who sent it
        log.info("the message's parts are nested too deeply; reading its headers only")
    except Exception:  # a last resort: the parser and decoders above already tolerate malformed mail
        log.exception("cannot read the envelope")
    return read_headers(raw)


def attachment_name(part: Message, path: tuple[str, ...], extension: str) -> str:
    name = filename_of(part)
    fallback = f"part-{'.'.join(path)}" + (f".{extension}" if extension else "")
    return safe_filename(name or "", fallback)
