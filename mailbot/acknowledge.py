"""Compose what an applicant is told: the one answer to a submission (subject, threading headers, text
and HTML bodies from ``templates/ack``) and the fixed-text notices (``templates/notice``); both are
written out by ``mailbot.mail_writer`` and added to the outbox by ``mailbot.outbox``.

Everything taken from a submission (names, titles, file names, subjects, addresses) is treated as
hostile: control characters, line breaks and terminal escapes are removed before a value reaches a
header or a body, addresses are checked against a strict syntax, the HTML body is autoescaped, and
non-ASCII header text is RFC 2047 encoded by :mod:`email.header`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbot.clock import utcnow
from mailbot.config import CallSettings
from mailbot.mail_writer import SUBJECT_LIMIT, ComposedMail, OutgoingHeaders, alternative_mail
from parsers.model import FieldScalar
from templates import Reason, TemplateSet, local_time, one_line

log = logging.getLogger(__name__)

OUTCOMES = ("accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable")
# Outcomes that register (or update) an application, so the answer must quote its reference number.
_REGISTERING = frozenset({"accepted", "incomplete", "revision"})


TITLE_IN_SUBJECT = 60
VALUE_LIMIT = 500
FILE_NAME_LIMIT = 120
MAX_REFERENCES = 10
MAX_REFERENCES_CHARS = 900

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


def compose_notice(
    templates: TemplateSet,
    template: str,
    call: CallSettings,
    reference: str | None,
    recipient: str,
    message_id: str,
    arrival: datetime,
    answering: str | None,
    auto_submitted: str,
    **extra: str,
) -> ComposedMail:
    """A notice of fixed text (``notice/<template>``): only the call, a reference, a time and what
    ``extra`` names go in — nothing of a submission a stranger may have written.

    ``answering`` is the Message-ID of the message it answers, if any (In-Reply-To, References).
    """
    context: dict[str, Any] = {
        "call": call,
        "reference": reference or "",
        "arrival": local_time(arrival, call.timezone),
        "signature": one_line(call.sender.name) or call.name_zh,
        **extra,
    }
    subject_source = templates.table("notice/notices.toml")[template]["subject"]
    subject = one_line(templates.render_string(subject_source, context), SUBJECT_LIMIT)
    context["subject"] = subject
    original = valid_message_id(answering) if answering else None
    raw = alternative_mail(
        OutgoingHeaders(
            sender_name=one_line(call.sender.name, 80),
            sender_address=call.sender.address,
            to=recipient,
            cc=None,
            subject=subject,
            date=utcnow().astimezone(call.tz),
            message_id=message_id,
            in_reply_to=original,
            references=[original] if original else [],
            auto_submitted=auto_submitted,
        ),
        templates.render(f"notice/{template}.txt.j2", context),
        templates.render(f"notice/{template}.html.j2", context),
    )
    return ComposedMail(message_id, (recipient.lower(),), raw)
