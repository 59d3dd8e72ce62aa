"""The digest in words: its subject, text and HTML from ``templates/digest``, and the mail that carries
them to the coordinators with the call's workbook attached, written by the one mail writer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from mailbot.acknowledge import make_message_id
from mailbot.config import CallSettings
from mailbot.digest.contents import DigestData, Words
from mailbot.mail_writer import SUBJECT_LIMIT, Attachment, ComposedMail, OutgoingHeaders, alternative_mail
from mailbot.outbox import coordinator_addresses
from templates import TemplateSet, one_line, zone_label

WORKBOOK_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The mail lists this many rows per section; the attached workbook has every one.
LIST_LIMIT = 60


def duration_words(span: timedelta) -> Words:
    """A span as days and hours (minutes when under an hour), in both languages."""
    minutes = max(0, int(span.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days == 0 and hours == 0:
        return Words(f"{minutes} 分钟", f"{minutes} minute{'s' * (minutes != 1)}")
    zh = f"{days} 天 {hours} 小时" if days else f"{hours} 小时"
    en_hours = f"{hours} hour{'s' * (hours != 1)}"
    en = f"{days} day{'s' * (days != 1)} {en_hours}" if days else en_hours
    return Words(zh, en)


def workbook_name(call: CallSettings, day: date) -> str:
    return f"{call.id}-{day.isoformat()}.xlsx"


def _words_table(templates: TemplateSet, name: str) -> Callable[[str | None], Words]:
    table = templates.table("digest/digest.toml").get(name, {})

    def words(code: str | None) -> Words:
        entry = table.get(code or "", {})
        if isinstance(entry, dict) and isinstance(entry.get("zh"), str) and isinstance(entry.get("en"), str):
            return Words(entry["zh"], entry["en"])
        return Words(code or "", code or "")

    return words


def digest_context(data: DigestData, templates: TemplateSet) -> dict[str, Any]:
    """The variables the digest templates and its subject line may use."""
    outcome = _words_table(templates, "outcomes")
    return {
        "data": data,
        "call": data.call,
        "zone": data.call.timezone,
        "day": data.day.isoformat(),
        "day_zh": f"{data.day.year}年{data.day.month}月{data.day.day}日",
        "outcome_rows": [
            {"code": code, "words": outcome(code), "new": data.new[code], "total": total}
            for code, total in data.totals.items()
        ],
        "outcome": outcome,
        "flag": _words_table(templates, "flags"),
        "problem": _words_table(templates, "problems"),
        "token_problem": _words_table(templates, "token_problems"),
        "reason": templates.reason,
        "duration": duration_words,
        "limit": LIST_LIMIT,
        "workbook": workbook_name(data.call, data.day),
        "digest_time": f"{data.schedule.time:%H:%M}",
        "digest_zone_zh": zone_label(data.schedule.timezone, "zh"),
        "digest_zone_en": zone_label(data.schedule.timezone, "en"),
    }


def render_digest(data: DigestData, templates: TemplateSet) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the digest."""
    context = digest_context(data, templates)
    subject_source = templates.table("digest/digest.toml")["subject"]
    subject = one_line(templates.render_string(subject_source, context), SUBJECT_LIMIT)
    context["subject"] = subject
    return (
        subject,
        templates.render("digest/digest.txt.j2", context),
        templates.render("digest/digest.html.j2", context),
    )


def digest_message_id(call: CallSettings, day: date) -> str:
    """The same for the same call and day, like an acknowledgement's: a retried send keeps it."""
    return make_message_id(call, f"DIGEST-{day:%Y%m%d}", f"digest\n{day.isoformat()}")


def compose_digest(data: DigestData, templates: TemplateSet, workbook: bytes, message_id: str) -> ComposedMail:
    """The digest mail to the call's coordinators, text and HTML, with the call's workbook attached."""
    recipients = coordinator_addresses(data.call)
    if not recipients:
        raise ValueError(f"call {data.call.id} has no valid coordinator address to send a digest to")
    subject, text, html = render_digest(data, templates)
    call = data.call
    headers = OutgoingHeaders(
        sender_name=one_line(call.sender.name, 80),
        sender_address=call.sender.address,
        to=recipients,
        cc=None,
        subject=subject,
        date=data.generated_at.astimezone(call.tz),
        message_id=message_id,
        in_reply_to=None,
        references=[],
        # RFC 3834: generated, not a reply; the intake recognises it as machine mail if it comes back in.
        auto_submitted="auto-generated",
    )
    workbook_file = Attachment(workbook_name(call, data.day), WORKBOOK_TYPE, workbook)
    return ComposedMail(message_id, tuple(recipients), alternative_mail(headers, text, html, [workbook_file]))
