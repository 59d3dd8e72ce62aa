"""What in a digest needs a person: second projects, flagged applications, replies and questions,
the review queue, and answers that bounced, failed, were withheld or may not have arrived.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailbot.decision import Outcome
from mailbot.digest.moment import Standing, reason_then
from mailbot.export import ApplicationAt
from storage.decisions import reference_of
from storage.digests import answers_in_trouble, application_by_key, closed_by_admin
from storage.models import Message, OutboxMail, OutboxState
from templates import one_line

EXCERPT_LINES = 3
EXCERPT_CHARS = 240
TEXT_CELL = 80
DETAIL_CHARS = 160

_QUOTE_START = re.compile(
    r"^(>|-{2,}\s*(原始邮件|Original Message)|_{5,}|On .+wrote:$|在.+写道[:：]?$|发件人[:：]|From:\s)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class DuplicateCase:
    reference: str | None
    applicant: str
    title: str
    existing_reference: str | None
    existing_title: str
    arrival: datetime


@dataclass(frozen=True)
class FlaggedApplication:
    reference: str | None
    applicant: str
    institution: str
    title: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Correspondence:
    reference: str | None
    sender: str
    subject: str
    excerpt: str
    arrival: datetime


@dataclass(frozen=True)
class ReviewItem:
    reference: str | None
    sender: str
    subject: str
    reason: str | None
    waiting_since: datetime


@dataclass(frozen=True)
class AckProblem:
    reference: str | None
    recipients: str
    problem: str  # "bounced" | "failed" | "uncertain" | "withheld"
    at: datetime | None
    detail: str
    new: bool  # happened since the last digest


def text_cell(value: object) -> str:
    return one_line(str(value), TEXT_CELL) if value not in (None, "") else ""


def duplicates(session: Session, applications: Sequence[ApplicationAt]) -> tuple[DuplicateCase, ...]:
    cases = []
    for view in applications:
        application, message = view.application, view.message
        if view.status != Outcome.DUPLICATE.value:
            continue
        existing = application_by_key(session, application.duplicate_of_key)
        cases.append(
            DuplicateCase(
                reference=reference_of(session, application.application_key),
                applicant=text_cell(view.fields.get("applicant_name")),
                title=text_cell(view.project_title),
                existing_reference=reference_of(session, application.duplicate_of_key),
                existing_title=text_cell(existing.project_title if existing else None),
                arrival=message.arrival,
            )
        )
    return tuple(cases)


def flagged(session: Session, applications: Sequence[ApplicationAt]) -> tuple[FlaggedApplication, ...]:
    return tuple(
        FlaggedApplication(
            reference=reference_of(session, view.application.application_key),
            applicant=text_cell(view.fields.get("applicant_name")),
            institution=text_cell(view.fields.get("institution")),
            title=text_cell(view.project_title),
            flags=view.flags,
        )
        for view in applications
        if view.flags
    )


def opening_lines(body: str, lines: int = EXCERPT_LINES, limit: int = EXCERPT_CHARS) -> str:
    """The first non-empty lines of a mail body, stopping where a quoted earlier message begins."""
    kept: list[str] = []
    for line in body.splitlines():
        text = line.strip()
        if not text:
            continue
        if _QUOTE_START.match(text):
            break
        kept.append(text)
        if len(kept) == lines:
            break
    return one_line(" ".join(kept), limit)


def correspondence(message: Message) -> Correspondence:
    envelope = (message.reading or {}).get("envelope") or {}
    name = one_line(str(envelope.get("from_name") or ""), 60)
    address = one_line(str(envelope.get("from_addr") or message.from_addr), 120)
    return Correspondence(
        reference=message.reference,
        sender=f"{name} <{address}>" if name else address,
        subject=text_cell(envelope.get("subject") or message.subject),
        excerpt=opening_lines(str(envelope.get("body_text") or "")),
        arrival=message.arrival,
    )


def review_queue(session: Session, standing: Standing, now: datetime) -> tuple[ReviewItem, ...]:
    """What waited for a person at ``now``: unreadable then, and not closed by an admin by then."""
    unreadable = [(m, then) for m, then in standing.values() if then.outcome == Outcome.UNREADABLE.value]
    closed = closed_by_admin(session, [m.id for m, _ in unreadable], now)
    items = [
        ReviewItem(
            reference=m.reference,
            sender=one_line(m.from_addr, 120),
            subject=text_cell(m.subject),
            reason=reason_then(m, then),
            waiting_since=then.at,
        )
        for m, then in unreadable
        if m.id not in closed
    ]
    return tuple(sorted(items, key=lambda item: item.waiting_since))


def ack_problems(session: Session, call_id: str, since: datetime | None, now: datetime) -> tuple[AckProblem, ...]:
    rows = answers_in_trouble(session, call_id)
    problems = []
    for mail, reference in rows:
        # a failure is recorded right after the last attempt, which began at sending_since
        at = (
            mail.bounced_at or mail.sending_since or (mail.created_at if mail.state == OutboxState.SUPPRESSED else None)
        )
        if at is not None and at > now:
            continue  # not yet known at the digest's moment
        problems.append(
            AckProblem(
                reference=reference,
                recipients=one_line(", ".join(mail.recipients), 200),
                problem=_problem(mail),
                at=at,
                detail=one_line(mail.last_reply or "", DETAIL_CHARS),
                new=since is None or at is None or at > since,
            )
        )
    return tuple(sorted(problems, key=lambda p: (not p.new, p.reference or "")))


def _problem(mail: OutboxMail) -> str:
    if mail.bounced_at is not None:
        return "bounced"
    if mail.state == OutboxState.SUPPRESSED:
        return "withheld"
    return "failed" if mail.state == OutboxState.FAILED else "uncertain"
