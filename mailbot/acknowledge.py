"""Compose the one answer an applicant gets: subject, threading headers, text and HTML bodies.

Everything taken from a submission (names, titles, file names, subjects, addresses) is treated as
hostile: control characters, line breaks and terminal escapes are removed before a value reaches a
header or a body, addresses are checked against a strict syntax, the HTML body is autoescaped, and
non-ASCII header text is RFC 2047 encoded by :mod:`email.header`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import AddressHeader
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any, SupportsBytes

import dkim

from mailbot.config import CallSettings
from mailbot.config_accounts import SmtpSettings
from parsers.model import FieldScalar
from templates import Reason, TemplateSet, one_line

log = logging.getLogger(__name__)

OUTCOMES = ("accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable")
# Outcomes that register (or update) an application, so the answer must quote its reference number.
_REGISTERING = frozenset({"accepted", "incomplete", "revision"})


_ID_HEADERS = frozenset({"message-id", "in-reply-to", "references"})


class AnswerPolicy(EmailPolicy):
    """The SMTP policy, except that a non-ASCII Subject or From is encoded by :mod:`email.header`.

    The default folder (Python 3.11) loses a space that falls between two encoded words when it folds
    a long line ("研究 · 编号" arrives as "研究· 编号"); the older encoder keeps spaces inside them.
    """

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _ID_HEADERS:
            return self._fold_ids(name, value)
        encoded = self._encode_words(name, value)
        return super().fold(name, value) if encoded is None else encoded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _ID_HEADERS:
            return self._fold_ids(name, value).encode("ascii")
        encoded = self._encode_words(name, value)
        return super().fold_binary(name, value) if encoded is None else encoded.encode("ascii")

    def _fold_ids(self, name: str, value: str) -> str:
        # Message-IDs are never encoded words: a long one stays whole on its line (legal up to 998)
        return f"{name}: " + f"{self.linesep} ".join(str(value).split()) + self.linesep

    def _encode_words(self, name: str, value: str) -> str | None:
        if str(value).isascii():
            return None
        width = self.max_line_length or 78
        if name.lower() == "subject":
            words = Header(str(value), "utf-8", width, name).encode(linesep=self.linesep)
        elif name.lower() == "from" and isinstance(value, AddressHeader):
            words = ", ".join(
                Header(a.display_name, "utf-8", width, name).encode(linesep=self.linesep) + f" <{a.addr_spec}>"
                for a in value.addresses
            )
        else:
            return None
        return f"{name}: {words}{self.linesep}"


SMTP_POLICY = AnswerPolicy(linesep="\r\n")
TITLE_IN_SUBJECT = 60
SUBJECT_LIMIT = 250
VALUE_LIMIT = 500
FILE_NAME_LIMIT = 120
MAX_REFERENCES = 10
MAX_REFERENCES_CHARS = 900
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

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*\.(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})")
_MESSAGE_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")
_OUR_ID = re.compile(r"<?ack\.[A-Za-z0-9-]+\.[0-9a-f]{10}@([A-Za-z0-9.-]+)>?", re.IGNORECASE)


@dataclass(frozen=True)
class AckContext:
    """What the decision made of one submission, and what is needed to answer it."""

    call: CallSettings
    outcome: str  # one of OUTCOMES
    reference: str | None
    fields: Mapping[str, FieldScalar]
    form_file: str | None
    missing: Sequence[str]
    arrival: datetime
    supersedes_reference: str | None
    duplicate_of_reference: str | None
    unreadable_reason: str | None
    original_message_id: str | None
    original_references: Sequence[str]
    original_subject: str
    reply_to: str  # the address the submission came from
    applicant_email: str | None  # the form's email (never copied in: see security.py)
    message_id: str  # our own Message-ID, made by make_message_id
    # False for an unauthenticated sender: links in what they wrote are broken, so an answer from the
    # fund's address never carries a clickable link a stranger chose (README: Security)
    echo_links: bool = True


@dataclass(frozen=True)
class FieldRow:
    """One line of the table of what the bot read from the form."""

    label_zh: str
    label_en: str
    value: str | None
    missing: bool


@dataclass(frozen=True)
class MissingItem:
    zh: str
    en: str


def sender_domain(call: CallSettings) -> str:
    return call.sender.address.rpartition("@")[2].lower()


def make_message_id(call: CallSettings, reference: str | None, unique: str) -> str:
    """``<ack.FUND24-0042.<10 hex>@<sender domain>>``, the same for the same ``unique``.

    Deterministic so that a retried send carries the Message-ID already recorded for the answer.
    """
    label = reference or call.reference_prefix
    digest = hashlib.sha256(f"{call.id}\n{label}\n{unique}".encode()).hexdigest()[:10]
    return f"<ack.{label}.{digest}@{sender_domain(call)}>"


def is_our_message_id(mid: str, calls: Sequence[CallSettings]) -> bool:
    """Whether ``mid`` names an acknowledgement sent for one of ``calls``."""
    match = _OUR_ID.fullmatch(mid.strip())
    return match is not None and match.group(1).lower() in {sender_domain(call) for call in calls}


def valid_address(text: str | None) -> str | None:
    """``text`` as a plain ``local@domain`` address, or None when it is not one (or carries extras)."""
    if text is None:
        return None
    candidate = text.strip()
    local, _, _ = candidate.partition("@")
    if len(candidate) > 254 or len(local) > 64 or not _ADDRESS.fullmatch(candidate):
        return None
    return candidate


def valid_message_id(text: str | None) -> str | None:
    """``text`` as ``<id@host>``, or None when it is not a usable Message-ID."""
    if text is None:
        return None
    match = _MESSAGE_ID.fullmatch(text.strip())
    return f"<{match.group(1)}>" if match and len(text) <= 250 else None


def thread_references(original_references: Sequence[str], original_id: str | None) -> list[str]:
    """The References of an answer: the original's, then the original itself, trimmed from the middle.

    The first entry (the thread's root) and the newest ones are kept, as RFC 5322 section 3.6.4 suggests.
    """
    chain: list[str] = []
    for candidate in [*original_references, original_id]:
        found = valid_message_id(candidate)
        if found and found not in chain:
            chain.append(found)
    while len(chain) > 2 and (len(chain) > MAX_REFERENCES or len(" ".join(chain)) > MAX_REFERENCES_CHARS):
        del chain[1]
    return chain


_DOMAIN_DOT = re.compile(r"(?<=[A-Za-z0-9-])\.(?=[A-Za-z][A-Za-z0-9-])")
_SCHEME = re.compile(r"(?i)\b(https?|ftp|file|javascript|data|mailto)(:)")


def defang(text: str) -> str:
    """``text`` with every link and domain made unclickable: "evil.example/x" → "evil[.]example/x"."""
    text = _SCHEME.sub(lambda m: f"{m.group(1)}[:]", text)
    return _DOMAIN_DOT.sub("[.]", text.replace("@", "[at]"))


def _display(value: FieldScalar, kind: str, call: CallSettings, echo_links: bool = True) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "是 Yes" if value else "否 No"
    if kind == "money" and isinstance(value, int | float):
        amount = f"{value:g}"
        return f"{amount} 万元 (CNY {value * 10000:,.0f})"
    text = one_line(str(value), VALUE_LIMIT)
    if not echo_links and kind != "topic":
        text = defang(text)
    if kind == "topic":
        for topic in call.topic:
            if topic.code == text:
                return f"{topic.code} {topic.name}"
    return text


def field_rows(ctx: AckContext, templates: TemplateSet) -> dict[str, FieldRow]:
    """The call's fields by name in form order, labelled in both languages, with the value read (or None)."""
    labels = templates.table("ack/fields.toml")
    rows = {}
    for spec in ctx.call.form_spec.fields:
        entry = labels.get(spec.name, {})
        rows[spec.name] = FieldRow(
            label_zh=entry.get("zh", spec.labels[0]),
            label_en=entry.get("en", spec.name),
            value=_display(ctx.fields.get(spec.name), spec.kind, ctx.call, ctx.echo_links),
            missing=spec.name in ctx.missing,
        )
    return rows


def missing_items(ctx: AckContext, rows: Mapping[str, FieldRow]) -> list[MissingItem]:
    """The missing fields in words; a group of which one suffices (email or phone) is one item."""
    items: list[MissingItem] = []
    said: set[str] = set()
    for name in ctx.missing:
        if name in said:
            continue
        group = next(
            (g for g in ctx.call.form_spec.required_one_of if name in g and set(g) <= set(ctx.missing)),
            (name,),
        )
        said.update(group)
        zh = "或".join(rows[n].label_zh if n in rows else n for n in group)
        en = " or ".join(rows[n].label_en if n in rows else n for n in group)
        items.append(
            MissingItem(zh=f"{zh}（至少填写一项）", en=f"{en} (at least one)")
            if len(group) > 1
            else MissingItem(zh, en)
        )
    return items


def template_context(ctx: AckContext, templates: TemplateSet, now: datetime | None = None) -> dict[str, Any]:
    """The variables every acknowledgement template and subject line may use.

    ``now`` is when the answer is written: an answer written after the deadline (a form an admin
    resolved late) must not ask for anything before it.
    """
    if ctx.outcome not in OUTCOMES:
        raise ValueError(f"no acknowledgement for outcome {ctx.outcome!r}")
    if ctx.outcome in _REGISTERING and not ctx.reference:
        raise ValueError(f"an acknowledgement of outcome {ctx.outcome!r} needs a reference number")
    outcome = templates.table("ack/outcomes.toml")[ctx.outcome]
    title = ctx.fields.get("project_title")
    subject = ctx.original_subject
    if not ctx.echo_links:
        title = defang(title) if isinstance(title, str) else title
        subject = defang(subject)
    rows = field_rows(ctx, templates)
    reason = templates.reason(ctx.unreadable_reason)
    has_form = ctx.outcome not in ("no_attachment", "unreadable")
    return {
        "call": ctx.call,
        "zone": ctx.call.timezone,
        "outcome": ctx.outcome,
        "status_zh": outcome["status_zh"],
        "status_en": outcome["status_en"],
        "accent": outcome["accent"],
        "reference": _clean_optional(ctx.reference, 40),
        "title": _clean_optional(title if isinstance(title, str) else None, TITLE_IN_SUBJECT),
        "rows": list(rows.values()) if has_form else [],
        "form_file": _clean_optional(ctx.form_file, FILE_NAME_LIMIT),
        "missing": missing_items(ctx, rows),
        "arrival": ctx.arrival,
        "deadline": ctx.call.deadline,
        "before_deadline": max(ctx.arrival, now or ctx.arrival) < ctx.call.effective_deadline,
        "review_within": templates.table("ack/outcomes.toml")["unreadable"].get("review_within", {}),
        "supersedes_reference": _clean_optional(ctx.supersedes_reference, 40),
        "duplicate_of_reference": _clean_optional(ctx.duplicate_of_reference, 40),
        "reason": Reason(zh=reason.zh.rstrip("。．.！!； "), en=reason.en.rstrip(".!; ")),
        "original_subject": one_line(subject, 200),
        "signature": one_line(ctx.call.sender.name) or ctx.call.name_zh,
    }


def _clean_optional(value: str | None, limit: int) -> str | None:
    return one_line(value, limit) or None if value is not None else None


@dataclass(frozen=True)
class ComposedMail:
    """An answer ready to queue: who gets it, its Message-ID, and its bytes as sent (CRLF, unsigned)."""

    message_id: str
    recipients: tuple[str, ...]
    raw: bytes

    def __bytes__(self) -> bytes:
        return self.raw


def compose_acknowledgement(ctx: AckContext, templates: TemplateSet, now: datetime) -> ComposedMail:
    """The answer to one submission as a multipart/alternative message, ready to sign and send."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the Date of an acknowledgement needs an aware datetime")
    recipient = valid_address(ctx.reply_to)
    if recipient is None:
        raise ValueError(f"cannot answer {one_line(ctx.reply_to, 80)!r}: not a valid address")
    message_id = valid_message_id(ctx.message_id)
    if message_id is None:
        raise ValueError(f"not a valid Message-ID: {one_line(ctx.message_id, 80)!r}")

    context = template_context(ctx, templates, now)
    subject_source = templates.table("ack/outcomes.toml")[ctx.outcome]["subject"]
    subject = one_line(templates.render_string(subject_source, context), SUBJECT_LIMIT)
    context["subject"] = subject
    text = templates.render(f"ack/{ctx.outcome}.txt.j2", context)
    html = templates.render(f"ack/{ctx.outcome}.html.j2", context)

    original = valid_message_id(ctx.original_message_id)
    raw = alternative_mail(
        OutgoingHeaders(
            sender_name=one_line(ctx.call.sender.name, 80),
            sender_address=ctx.call.sender.address,
            to=recipient,
            cc=None,
            subject=subject,
            date=now.astimezone(ctx.call.tz),
            message_id=message_id,
            in_reply_to=original,
            references=thread_references(ctx.original_references, original),
        ),
        text,
        html,
    )
    return ComposedMail(message_id, (recipient.lower(),), raw)


# --- the message on the wire ------------------------------------------------------------------
#
# Every answer has the same shape (two bodies, a fixed set of headers), so it is written out here
# rather than through EmailMessage: the header registry and generator cost more than rendering the
# templates, once per answer during a rush. Header values arrive cleaned by one_line and checked by
# valid_address / valid_message_id; a line break among them is refused all the same.

CRLF = "\r\n"
HEADER_WIDTH = 78
BASE64_LINE = 76


@dataclass(frozen=True)
class OutgoingHeaders:
    sender_name: str
    sender_address: str
    to: str
    cc: str | None
    subject: str
    date: datetime
    message_id: str
    in_reply_to: str | None
    references: Sequence[str]
    # RFC 3834: "auto-replied" answers a message; "auto-generated" is a notice nobody wrote to us for
    auto_submitted: str = "auto-replied"


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


def ids_header(name: str, ids: Sequence[str]) -> str:
    # Message-IDs are never encoded words: a long one stays whole on its line (legal up to 998)
    return f"{name}: " + f"{CRLF} ".join(_single_line(i) for i in ids)


def base64_body(text: str) -> str:
    """``text`` with CRLF line ends, base64-encoded in lines of 76 characters (RFC 2045)."""
    data = b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i : i + BASE64_LINE] + CRLF for i in range(0, len(encoded), BASE64_LINE))


def alternative_mail(headers: OutgoingHeaders, text: str, html: str) -> bytes:
    """A multipart/alternative message (text, then HTML) with ``headers`` and automatic-answer marks."""
    lines = [
        mailbox_header("From", headers.sender_name, headers.sender_address),
        mailbox_header("To", "", headers.to),
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
    # the boundary cannot occur in the parts: base64 has no "_" and "=" only as final padding
    boundary = "=_" + hashlib.sha256(headers.message_id.encode()).hexdigest()[:32]
    lines += [
        # RFC 3834: the standard mark of an automatic answer; well-behaved responders stay quiet on it.
        f"Auto-Submitted: {_single_line(headers.auto_submitted)}",
        # Exchange's own switch: no out-of-office or auto-reply back, but delivery reports still come.
        "X-Auto-Response-Suppress: OOF, AutoReply",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"',
        "Content-Language: zh-CN, en",
        "",
    ]
    for subtype, body in (("plain", text), ("html", html)):
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            "",
            base64_body(body),
        ]
    lines.append(f"--{boundary}--{CRLF}")
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
