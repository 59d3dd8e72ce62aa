"""The one writer of outgoing mail: every answer, notice, alert and digest leaves as bytes written here.

Every mail the bot sends has the same shape — a fixed set of headers, a text and an HTML body, and for
the digest one attached workbook — so it is written out here rather than through ``EmailMessage``: the
header registry and generator cost more than rendering the templates, once per answer during a rush.
Header values arrive cleaned by ``templates.one_line`` and checked by ``valid_address`` /
``valid_message_id``; a line break among them is refused all the same. DKIM signing happens in one
place, :func:`message_bytes`, as a mail is added to the outbox.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import encode_rfc2231, format_datetime, formataddr
from pathlib import Path
from typing import SupportsBytes

import dkim

from mailbot.config_accounts import SmtpSettings

CRLF = "\r\n"
HEADER_WIDTH = 78
BASE64_LINE = 76
SUBJECT_LIMIT = 250
DKIM_SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"auto-submitted",
)


@dataclass(frozen=True)
class ComposedMail:
    """A mail ready to queue: who gets it, its Message-ID, and its bytes as sent (CRLF, unsigned)."""

    message_id: str
    recipients: tuple[str, ...]
    raw: bytes

    def __bytes__(self) -> bytes:
        return self.raw


@dataclass(frozen=True)
class OutgoingHeaders:
    sender_name: str
    sender_address: str
    to: str | Sequence[str]  # one address (an answer) or several (the coordinators of a digest)
    cc: str | None
    subject: str
    date: datetime
    message_id: str
    in_reply_to: str | None
    references: Sequence[str]
    # RFC 3834: "auto-replied" answers a message; "auto-generated" is a notice nobody wrote to us for
    auto_submitted: str = "auto-replied"


@dataclass(frozen=True)
class Attachment:
    """A file sent along (the digest's workbook): its name, MIME type and bytes."""

    filename: str
    content_type: str  # "maintype/subtype"
    data: bytes


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value may not break lines: {value[:80]!r}")
    return value


def _plain_ascii(value: str) -> bool:
    # literal "=?" in ASCII text would read as the start of an encoded word: encode such text too
    return value.isascii() and "=?" not in value


def text_header(name: str, value: str) -> str:
    """``Name: value`` folded to the line width, as RFC 2047 encoded words unless plain ASCII."""
    charset = "us-ascii" if _plain_ascii(value) else "utf-8"
    return f"{name}: " + Header(_single_line(value), charset, HEADER_WIDTH, name).encode(linesep=CRLF)


def mailbox_header(name: str, display_name: str, address: str) -> str:
    if not display_name:
        return f"{name}: {_single_line(address)}"
    if _plain_ascii(display_name):
        line = f"{name}: " + _single_line(formataddr((display_name, address)))
        if len(line) <= HEADER_WIDTH:
            return line
        # too long for one line: encoded words fold cleanly, where a folded quoted name may not
        # read back the same
    words = Header(_single_line(display_name), "utf-8", HEADER_WIDTH, name).encode(linesep=CRLF)
    angle = f"<{_single_line(address)}>"
    last_line = f"{name}: {words}".rpartition(CRLF)[2]
    space = f"{CRLF} " if len(last_line) + 1 + len(angle) > HEADER_WIDTH else " "
    return f"{name}: {words}{space}{angle}"


def address_list_header(name: str, addresses: Sequence[str]) -> str:
    """``Name: a, b, c``, folded between addresses when the line would grow past the width."""
    lines = [f"{name}:"]
    for index, address in enumerate(addresses):
        word = _single_line(address) + ("," if index < len(addresses) - 1 else "")
        if index and len(lines[-1]) + 1 + len(word) > HEADER_WIDTH:
            lines.append("")
        lines[-1] += f" {word}"
    return CRLF.join(lines)


def ids_header(name: str, ids: Sequence[str]) -> str:
    # Message-IDs are never encoded words: a long one stays whole on its line (legal up to 998)
    return f"{name}: " + f"{CRLF} ".join(_single_line(i) for i in ids)


def base64_body(text: str) -> str:
    """``text`` with CRLF line ends, base64-encoded in lines of 76 characters (RFC 2045)."""
    data = b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"
    return _base64_lines(data)


def _base64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i : i + BASE64_LINE] + CRLF for i in range(0, len(encoded), BASE64_LINE))


def _boundary(message_id: str, part: str = "") -> str:
    # the boundary cannot occur in the parts: base64 has no "_" and "=" only as final padding
    return "=_" + hashlib.sha256(f"{part}{message_id}".encode()).hexdigest()[:32]


def _top_headers(headers: OutgoingHeaders) -> list[str]:
    to = [headers.to] if isinstance(headers.to, str) else list(headers.to)
    lines = [
        mailbox_header("From", headers.sender_name, headers.sender_address),
        mailbox_header("To", "", to[0]) if len(to) == 1 else address_list_header("To", to),
    ]
    if headers.cc:
        lines.append(mailbox_header("Cc", "", headers.cc))
    lines += [
        text_header("Subject", headers.subject),
        f"Date: {format_datetime(headers.date)}",
        ids_header("Message-ID", [headers.message_id]),
    ]
    if headers.in_reply_to:
        lines.append(ids_header("In-Reply-To", [headers.in_reply_to]))
    if headers.references:
        lines.append(ids_header("References", headers.references))
    return [
        *lines,
        # RFC 3834: the standard mark of an automatic answer; well-behaved responders stay quiet on it.
        f"Auto-Submitted: {_single_line(headers.auto_submitted)}",
        # Exchange's own switch: no out-of-office or auto-reply back, but delivery reports still come.
        "X-Auto-Response-Suppress: OOF, AutoReply",
        "MIME-Version: 1.0",
    ]


def _alternative_parts(boundary: str, text: str, html: str) -> list[str]:
    lines = []
    for subtype, body in (("plain", text), ("html", html)):
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            "",
            base64_body(body),
        ]
    return [*lines, f"--{boundary}--{CRLF}"]


def _attachment_part(boundary: str, attachment: Attachment) -> list[str]:
    name = _single_line(attachment.filename)
    # RFC 2231 for a name that is not a plain ASCII token; most names are (a call id and a date)
    quoted = (
        f'filename="{name}"' if _plain_ascii(name) and '"' not in name else f"filename*={encode_rfc2231(name, 'utf-8')}"
    )
    return [
        f"--{boundary}",
        f"Content-Type: {_single_line(attachment.content_type)}",
        "Content-Transfer-Encoding: base64",
        f"Content-Disposition: attachment;{CRLF} {quoted}",
        "",
        _base64_lines(attachment.data),
    ]


def alternative_mail(headers: OutgoingHeaders, text: str, html: str, attachments: Sequence[Attachment] = ()) -> bytes:
    """A multipart/alternative message (text, then HTML) with ``headers`` and automatic-answer marks.

    With ``attachments`` it is the first part of a multipart/mixed message, the files after it.
    """
    lines = _top_headers(headers)
    boundary = _boundary(headers.message_id)
    if not attachments:
        lines += [
            f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"',
            "Content-Language: zh-CN, en",
            "",
            *_alternative_parts(boundary, text, html),
        ]
        return CRLF.join(lines).encode("ascii")
    mixed = _boundary(headers.message_id, "mixed\n")
    lines += [
        f'Content-Type: multipart/mixed;{CRLF} boundary="{mixed}"',
        "Content-Language: zh-CN, en",
        "",
        f"--{mixed}",
        f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"',
        "",
        *_alternative_parts(boundary, text, html),
    ]
    for attachment in attachments:
        lines += _attachment_part(mixed, attachment)
    lines.append(f"--{mixed}--{CRLF}")
    return CRLF.join(lines).encode("ascii")


def sign_dkim(msg_bytes: bytes, selector: str, domain: str, key_pem: bytes) -> bytes:
    """``msg_bytes`` with a DKIM-Signature header (rsa-sha256, relaxed/relaxed) on top."""
    signature = dkim.sign(
        msg_bytes,
        selector.encode("ascii"),
        domain.encode("ascii"),
        key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(DKIM_SIGNED_HEADERS),
    )
    return bytes(signature) + msg_bytes


def message_bytes(mail: SupportsBytes, smtp: SmtpSettings) -> bytes:
    """The message as sent (CRLF line ends), DKIM-signed when ``[smtp] dkim_*`` are all set."""
    raw = bytes(mail)
    dkim_settings = (smtp.dkim_selector, smtp.dkim_domain, smtp.dkim_key_file)
    if all(value is None for value in dkim_settings):
        return raw
    selector, domain, key_file = dkim_settings
    if selector is None or domain is None or key_file is None:
        raise ValueError("[smtp] DKIM signing needs dkim_selector, dkim_domain and dkim_key_file together")
    return sign_dkim(raw, selector, domain, Path(key_file).read_bytes())
