"""The coordinators' daily digest: where a call stands, what is new, and what needs a person.

:func:`build_digest` reads the database and nothing else, so a digest can be previewed, tested and
rebuilt for any day; :func:`render_digest` turns it into words; :func:`compose_digest` into a mail
with the call's workbook attached; :func:`queue_digest` puts it in the outbox once per call and day,
however many workers try, because the ``digests`` row and the outbox row commit together and the
row's primary key (call, day) lets only one of them in.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.acknowledge import SMTP_POLICY, SUBJECT_LIMIT, make_message_id, message_bytes, valid_address
from mailbot.clock import utcnow
from mailbot.config import CallSettings, DigestSettings, Settings
from mailbot.decision import Outcome
from mailbot.export import ApplicationAt, Snapshot, message_fields, to_xlsx
from mailbot.institutions import normalise_institution
from mailbot.oauth import TokenStatus, token_problems
from storage import Storage
from storage.db import transaction
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from storage.models import (
    Application,
    DigestRun,
    Event,
    Message,
    OutboxMail,
    OutboxState,
    SendVerdict,
)
from templates import TemplateSet, one_line, zone_label

log = logging.getLogger(__name__)

ACTOR = "digest"
WORKBOOK_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
# Outcomes of a message that carried a readable form: the "new submissions" of a digest.
SUBMISSION_OUTCOMES = (
    Outcome.ACCEPTED,
    Outcome.INCOMPLETE,
    Outcome.REVISION,
    Outcome.DUPLICATE,
    Outcome.LATE,
)
# An application that arrived late is kept on record but is not in the running.
NOT_CURRENT = frozenset({Outcome.LATE.value})
TOP_INSTITUTIONS = 10
# The mail lists this many rows per section; the attached workbook has every one.
LIST_LIMIT = 60
EXCERPT_LINES = 3
EXCERPT_CHARS = 240
TEXT_CELL = 80
DETAIL_CHARS = 160

_QUOTE_START = re.compile(
    r"^(>|-{2,}\s*(原始邮件|Original Message)|_{5,}|On .+wrote:$|在.+写道[:：]?$|发件人[:：]|From:\s)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Words:
    zh: str
    en: str


@dataclass(frozen=True)
class Countdown:
    deadline: datetime  # the call's stated deadline (grace not shown to people)
    remaining: timedelta  # until the effective deadline; zero or less once it has passed

    @property
    def closed(self) -> bool:
        return self.remaining <= timedelta(0)


@dataclass(frozen=True)
class Bar:
    """One row of a bar chart: a label, a count, and the bar's width in percent of the longest."""

    label: str
    count: int
    width: int
    code: str | None = None


@dataclass(frozen=True)
class DirectionBars:
    direction: Bar
    topics: tuple[Bar, ...]


@dataclass(frozen=True)
class NewSubmission:
    reference: str | None
    outcome: str
    applicant: str
    institution: str
    title: str
    topic: str
    arrival: datetime


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


@dataclass(frozen=True)
class DigestData:
    call: CallSettings
    schedule: DigestSettings
    day: date
    generated_at: datetime
    late: bool  # a catch-up: the bot was not running at the digest time
    since: datetime | None  # when the previous digest was built; None for the first one
    totals: Mapping[str, int]  # every outcome, in the order of Outcome, zeros included
    new: Mapping[str, int]  # the same, decided since ``since``
    applications: int  # current applications, i.e. projects (late ones excluded)
    applicants: int  # the people behind them: a duplicate is a second project of the same person
    countdown: Countdown
    directions: tuple[DirectionBars, ...]
    institutions: tuple[Bar, ...]
    submissions: tuple[NewSubmission, ...]
    duplicates: tuple[DuplicateCase, ...]
    flagged: tuple[FlaggedApplication, ...]
    correspondence: tuple[Correspondence, ...]
    review: tuple[ReviewItem, ...]  # oldest first
    ack_problems: tuple[AckProblem, ...]
    # the call's mailboxes and SMTP whose OAuth2 refresh token the provider no longer takes
    token_problems: tuple[TokenStatus, ...] = ()

    @property
    def total_count(self) -> int:
        return sum(self.totals.values())

    @property
    def new_count(self) -> int:
        return sum(self.new.values())

    @property
    def review_oldest_age(self) -> timedelta | None:
        return self.generated_at - self.review[0].waiting_since if self.review else None

    @property
    def attention_count(self) -> int:
        """How many things wait for a person (bounces count only when new; old ones were reported)."""
        return (
            len(self.duplicates)
            + len(self.flagged)
            + len(self.correspondence)
            + len(self.review)
            + sum(1 for p in self.ack_problems if p.new)
            + len(self.token_problems)
        )


# ---------------------------------------------------------------------------------------------- building


def build_digest(
    session: Session, settings: Settings, call: CallSettings, day: date, now: datetime, late: bool = False
) -> DigestData:
    """The digest of ``call`` for ``day`` as the call stood at ``now``; reads, never writes.

    Everything is computed from what had arrived and been decided by ``now``, so a digest for an
    earlier day (``now`` at the end of that day) shows the call as it was then, not as it is today.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("a digest needs an aware 'now'")
    since = session.scalar(
        select(func.max(DigestRun.created_at)).where(DigestRun.call_id == call.id, DigestRun.day < day)
    )
    standing = _decisions_at(session, call.id, now)
    messages = [m for m, _ in standing.values()]
    outcome_of = {m.id: outcome for m, (outcome, _at) in standing.values()}
    decided_at = {m.id: at for m, (_outcome, at) in standing.values()}
    fresh = [m for m in messages if since is None or decided_at[m.id] > since]
    applications = _applications_at(session, call.id, standing)
    submission_outcomes = {o.value for o in SUBMISSION_OUTCOMES}
    return DigestData(
        call=call,
        schedule=settings.digest,
        day=day,
        generated_at=now,
        late=late,
        since=since,
        totals=_by_outcome(outcome_of[m.id] for m in messages),
        new=_by_outcome(outcome_of[m.id] for m in fresh),
        applications=len(applications),
        applicants=len({view.application.applicant_id for view in applications}),
        countdown=Countdown(call.deadline, call.effective_deadline - now),
        directions=_direction_bars(call, applications),
        institutions=_institution_bars(call, applications),
        submissions=tuple(
            _new_submission(call, m, outcome_of[m.id]) for m in fresh if outcome_of[m.id] in submission_outcomes
        ),
        duplicates=_duplicates(session, applications),
        flagged=_flagged(session, applications),
        correspondence=tuple(_correspondence(m) for m in fresh if outcome_of[m.id] == Outcome.CORRESPONDENCE.value),
        review=_review_queue(session, standing, now),
        ack_problems=_ack_problems(session, call.id, since, now),
        token_problems=token_problems(session, settings, call.id),
    )


Standing = dict[int, tuple[Message, tuple[str, datetime]]]
_DECISION_EVENTS = ("decided", "failed")


def _decisions_at(session: Session, call_id: str, now: datetime) -> Standing:
    """Each message of the call decided by ``now``, with the outcome it had then and when it got it.

    A message decided again later (an admin resolved it, a retry) had, at ``now``, the outcome of
    its last decision before: the event log has it.
    """
    standing: Standing = {}
    later: list[Message] = []
    query = select(Message).where(Message.call_id == call_id, Message.outcome.is_not(None))
    for message in session.scalars(query.order_by(Message.arrival, Message.id)):
        if message.decided_at is not None and message.decided_at <= now:
            standing[message.id] = (message, (str(message.outcome), message.decided_at))
        else:
            later.append(message)
    if later:
        earlier = session.execute(
            select(Event.message_pk, Event.kind, Event.detail, Event.at)
            .where(Event.message_pk.in_([m.id for m in later]), Event.kind.in_(_DECISION_EVENTS), Event.at <= now)
            .order_by(Event.at, Event.id)
        )
        by_id = {m.id: m for m in later}
        for pk, kind, detail, at in earlier:
            outcome = Outcome.UNREADABLE.value if kind == "failed" else str((detail or {}).get("outcome") or "")
            if outcome and pk is not None:
                standing[pk] = (by_id[pk], (outcome, at))
    return dict(sorted(standing.items(), key=lambda item: (item[1][0].arrival, item[0])))


def _by_outcome(outcomes: Iterable[str]) -> dict[str, int]:
    counts = Counter(outcomes)
    return {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}


def _applications_at(session: Session, call_id: str, standing: Standing) -> list[ApplicationAt]:
    """The call's current applications (late ones excluded) as they stood when ``standing`` was taken."""
    return [view for view in _every_application_at(session, call_id, standing) if view.status not in NOT_CURRENT]


def _every_application_at(session: Session, call_id: str, standing: Standing) -> list[ApplicationAt]:
    """Every application of the call that existed when ``standing`` was taken, as it stood then."""
    counted = {o.value for o in SUBMISSION_OUTCOMES}
    forms: dict[int, list[Message]] = {}
    for message, (outcome, _at) in standing.values():
        if message.application_id is not None and outcome in counted:
            forms.setdefault(message.application_id, []).append(message)
    views = []
    rows = session.scalars(select(Application).where(Application.call_id == call_id).order_by(Application.id))
    for application in rows:
        current = standing.get(application.current_message_pk)
        if current is not None:
            view = ApplicationAt(
                application,
                current[0],
                application.status,
                application.fields or {},
                tuple(str(name) for name in application.missing or ()),
                tuple(str(flag) for flag in application.flags or ()),
            )
        elif application.id in forms:
            view = _earlier_form(application, forms[application.id], standing)
        else:
            continue  # it did not exist yet
        views.append(view)
    return views


def _earlier_form(application: Application, forms: list[Message], standing: Standing) -> ApplicationAt:
    """An application whose current form came later: the latest form it had, and the status that gave it."""
    latest = max(forms, key=lambda m: (m.arrival, m.id))
    outcome = standing[latest.id][1][0]
    first = next((m for m in forms if m.message_key == application.application_key), None)
    first_outcome = standing[first.id][1][0] if first is not None else Outcome.ACCEPTED.value
    decision = latest.decision or {}
    if outcome != Outcome.REVISION.value:
        status = outcome
    elif first_outcome in (Outcome.LATE.value, Outcome.DUPLICATE.value):
        status = first_outcome
    else:
        status = (Outcome.INCOMPLETE if decision.get("missing") else Outcome.ACCEPTED).value
    return ApplicationAt(
        application,
        latest,
        status,
        message_fields(latest) or {},
        tuple(str(name) for name in decision.get("missing") or ()),
        tuple(str(flag) for flag in decision.get("flags") or ()),
    )


def call_at(session: Session, call_id: str, now: datetime) -> Snapshot:
    """The call as it stood at ``now``, for its workbook: the same moment the digest's words show."""
    standing = _decisions_at(session, call_id, now)
    return Snapshot(
        messages=tuple((message, outcome) for message, (outcome, _at) in standing.values()),
        applications=tuple(_every_application_at(session, call_id, standing)),
    )


def _text(value: object) -> str:
    return one_line(str(value), TEXT_CELL) if value not in (None, "") else ""


def topic_label(call: CallSettings, code: object) -> str:
    """``3.2 自动评测与作文批改`` for a known code, the written value otherwise."""
    text = _text(code)
    for topic in call.topic:
        if topic.code == text:
            return f"{topic.code} {topic.name}"
    return text


def _widths(counts: Sequence[int]) -> list[int]:
    largest = max(counts, default=0)
    if largest == 0:
        return [0 for _ in counts]
    # a bar is at least 1 % wide so that one application is still visible beside a hundred
    return [max(1, round(100 * count / largest)) if count else 0 for count in counts]


def _direction_bars(call: CallSettings, applications: Sequence[ApplicationAt]) -> tuple[DirectionBars, ...]:
    """Every direction and topic of the call with its number of applications, plus one for the unknown."""
    per_topic = Counter(_text(view.fields.get("topic")) for view in applications)
    known = {t.code for t in call.topic}
    unknown = sum(count for code, count in per_topic.items() if code not in known)
    directions: dict[str, list[tuple[str, str, int]]] = {}
    for topic in call.topic:
        directions.setdefault(topic.direction, []).append((topic.code, topic.name, per_topic.get(topic.code, 0)))
    if unknown:
        directions.setdefault("", []).append(("", "", unknown))
    all_widths = iter(_widths([count for topics in directions.values() for _, _, count in topics]))
    direction_totals = [sum(count for _, _, count in topics) for topics in directions.values()]
    direction_widths = iter(_widths(direction_totals))
    result = []
    for (direction, topics), total in zip(directions.items(), direction_totals, strict=True):
        bars = tuple(
            Bar(label=name, count=count, width=next(all_widths), code=code or None) for code, name, count in topics
        )
        result.append(DirectionBars(Bar(direction, total, next(direction_widths)), bars))
    return tuple(result)


def _institution(call: CallSettings, view: ApplicationAt) -> str:
    written = _text(view.fields.get("institution"))
    canonical = normalise_institution(written, call.institution_aliases) if written else ""
    return canonical or view.application.applicant.institution_key or ""


def _institution_bars(call: CallSettings, applications: Sequence[ApplicationAt]) -> tuple[Bar, ...]:
    """Institutions by the number of applicants: a person's second project does not count twice."""
    people: dict[int, str] = {}
    for view in applications:
        place = _institution(call, view)
        if place and (view.status != Outcome.DUPLICATE.value or view.application.applicant_id not in people):
            people.setdefault(view.application.applicant_id, place)
    counts = Counter(people.values())
    counts.pop("", None)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_INSTITUTIONS]
    widths = _widths([count for _, count in top])
    return tuple(Bar(name, count, width) for (name, count), width in zip(top, widths, strict=True))


def _new_submission(call: CallSettings, message: Message, outcome: str) -> NewSubmission:
    fields = message_fields(message) or {}
    return NewSubmission(
        reference=message.reference,
        outcome=outcome,
        applicant=_text(fields.get("applicant_name")),
        institution=_text(fields.get("institution")),
        title=_text(fields.get("project_title")),
        topic=topic_label(call, fields.get("topic")),
        arrival=message.arrival,
    )


def _reference_of_key(session: Session, message_key: str | None) -> str | None:
    if message_key is None:
        return None
    return session.scalar(select(Message.reference).where(Message.message_key == message_key))


def _duplicates(session: Session, applications: Sequence[ApplicationAt]) -> tuple[DuplicateCase, ...]:
    cases = []
    for view in applications:
        application, message = view.application, view.message
        if view.status != Outcome.DUPLICATE.value:
            continue
        existing = session.scalar(
            select(Application).where(Application.application_key == application.duplicate_of_key)
        )
        cases.append(
            DuplicateCase(
                reference=_reference_of_key(session, application.application_key),
                applicant=_text(view.fields.get("applicant_name")),
                title=_text(view.project_title),
                existing_reference=_reference_of_key(session, application.duplicate_of_key),
                existing_title=_text(existing.project_title if existing else None),
                arrival=message.arrival,
            )
        )
    return tuple(cases)


def _flagged(session: Session, applications: Sequence[ApplicationAt]) -> tuple[FlaggedApplication, ...]:
    return tuple(
        FlaggedApplication(
            reference=_reference_of_key(session, view.application.application_key),
            applicant=_text(view.fields.get("applicant_name")),
            institution=_text(view.fields.get("institution")),
            title=_text(view.project_title),
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


def _correspondence(message: Message) -> Correspondence:
    envelope = (message.reading or {}).get("envelope") or {}
    name = one_line(str(envelope.get("from_name") or ""), 60)
    address = one_line(str(envelope.get("from_addr") or message.from_addr), 120)
    return Correspondence(
        reference=message.reference,
        sender=f"{name} <{address}>" if name else address,
        subject=_text(envelope.get("subject") or message.subject),
        excerpt=opening_lines(str(envelope.get("body_text") or "")),
        arrival=message.arrival,
    )


def _review_queue(session: Session, standing: Standing, now: datetime) -> tuple[ReviewItem, ...]:
    """What waited for a person at ``now``: unreadable then, and not closed by an admin by then."""
    unreadable = [(m, at) for m, (outcome, at) in standing.values() if outcome == Outcome.UNREADABLE.value]
    closed = set(
        session.scalars(
            select(Event.message_pk).where(
                Event.message_pk.in_([m.id for m, _ in unreadable]), Event.kind == "queue-rejected", Event.at <= now
            )
        )
    )
    items = [
        ReviewItem(
            reference=m.reference,
            sender=one_line(m.from_addr, 120),
            subject=_text(m.subject),
            reason=m.reason,
            waiting_since=at,
        )
        for m, at in unreadable
        if m.id not in closed
    ]
    return tuple(sorted(items, key=lambda item: item.waiting_since))


def _ack_problems(session: Session, call_id: str, since: datetime | None, now: datetime) -> tuple[AckProblem, ...]:
    rows = session.execute(
        select(OutboxMail, Message.reference)
        .outerjoin(Message, Message.id == OutboxMail.message_pk)
        .where(
            OutboxMail.kind == "ack",
            OutboxMail.call_id == call_id,
            OutboxMail.bounced_at.is_not(None)
            | (OutboxMail.state == OutboxState.FAILED)
            | (OutboxMail.state == OutboxState.SUPPRESSED)  # forged, spam or over a limit: not answered
            | OutboxMail.id.in_(_presumed_sends(session)),
        )
    )
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


def _presumed_sends(session: Session) -> list[int]:
    """Answers a stop interrupted as the server took them and nothing could tell whether it kept them.

    Rare (one per stop and sending worker at most), so the event log is read rather than indexed.
    """
    details = session.scalars(select(Event.detail).where(Event.kind == EventKind.OUTBOX_RECOVERED))
    return [int(d["outbox_id"]) for d in details if d.get("verdict") == SendVerdict.PRESUMED.value]


# ---------------------------------------------------------------------------------------------- words


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


def coordinator_addresses(call: CallSettings) -> list[str]:
    """The call's coordinators that are valid addresses, lower-cased, each once."""
    found = []
    for entry in call.coordinators:
        address = valid_address(entry)
        if address is None:
            log.warning("call %s: coordinator %r is not a valid address; left out", call.id, entry)
        elif address.lower() not in found:
            found.append(address.lower())
    return found


def digest_message_id(call: CallSettings, day: date) -> str:
    """The same for the same call and day, like an acknowledgement's: a retried send keeps it."""
    return make_message_id(call, f"DIGEST-{day:%Y%m%d}", f"digest\n{day.isoformat()}")


def compose_digest(data: DigestData, templates: TemplateSet, workbook: bytes, message_id: str) -> EmailMessage:
    """The digest mail to the call's coordinators, text and HTML, with the call's workbook attached."""
    recipients = coordinator_addresses(data.call)
    if not recipients:
        raise ValueError(f"call {data.call.id} has no valid coordinator address to send a digest to")
    subject, text, html = render_digest(data, templates)
    msg = EmailMessage(policy=SMTP_POLICY)
    call = data.call
    msg["From"] = Address(display_name=one_line(call.sender.name, 80), addr_spec=call.sender.address)
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(data.generated_at.astimezone(call.tz))
    msg["Message-ID"] = message_id
    # RFC 3834: generated, not a reply; the intake recognises it as machine mail if it comes back in.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="base64")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    maintype, subtype = WORKBOOK_TYPE
    msg.add_attachment(workbook, maintype=maintype, subtype=subtype, filename=workbook_name(call, data.day))
    msg["Content-Language"] = "zh-CN, en"
    return msg


# ---------------------------------------------------------------------------------------------- queueing


def queue_digest(
    store: Storage,
    settings: Settings,
    call: CallSettings,
    day: date,
    now: datetime,
    late: bool,
    templates: TemplateSet | None = None,
    queued_at: datetime | None = None,
) -> int | None:
    """Put the digest of ``call`` for ``day`` as it stood at ``now`` in the outbox; its outbox id, or None if done.

    The ``digests`` row is dated ``now``, the moment the digest shows: the next digest counts what was
    decided after it as new. The outbox row is dated ``queued_at`` (default ``now``), when it really
    was queued: the sender retries for ``retry_for_hours`` from then, and a past day's digest, whose
    ``now`` is the end of that day, must not be given up at its first temporary refusal.

    Safe to call from several processes at once: only the first commit of the (call, day) row wins.
    """
    queued = queued_at or now
    chosen = templates or TemplateSet.from_settings(settings)
    with store.sessions() as session:
        if session.get(DigestRun, (call.id, day)) is not None:
            return None
        data = build_digest(session, settings, call, day, now, late=late)
        # the workbook shows the same moment as the words: a past day's digest carries that day's state
        workbook = to_xlsx(
            session, call.id, settings=settings, templates=chosen, snapshot=call_at(session, call.id, now)
        )
    message_id = digest_message_id(call, day)
    mail = compose_digest(data, chosen, workbook, message_id)
    raw = message_bytes(mail, settings.smtp)
    mailbox = settings.mailbox_for_call(call.id)
    try:
        with transaction(store.sessions) as session:
            run = DigestRun(call_id=call.id, day=day, created_at=now, late=late)
            session.add(run)
            session.flush()
            outbox = OutboxMail(
                kind="digest",
                call_id=call.id,
                mailbox=mailbox,
                sender=call.sender.address,
                recipients=coordinator_addresses(call),
                message_id=message_id,
                raw=raw,
                state=OutboxState.PENDING,
                attempts=0,
                next_attempt_at=queued,
                created_at=queued,
            )
            session.add(outbox)
            session.flush()
            run.outbox_id = outbox.id
            add_event(
                session,
                EventKind.DIGEST_QUEUED,
                ACTOR,
                call=call.id,
                day=day.isoformat(),
                late=late,
                outbox_id=outbox.id,
                new=data.new_count,
                attention=data.attention_count,
            )
            failpoint("digest.insert")
    except IntegrityError:
        log.info("the %s digest of %s was queued by another worker", day.isoformat(), call.id)
        return None
    log.info(
        "queued the %s digest of %s%s: %d new, %d to handle",
        day.isoformat(),
        call.id,
        " (late)" if late else "",
        data.new_count,
        data.attention_count,
    )
    return outbox.id


# ---------------------------------------------------------------------------------------------- CLI


def add_digest_command(subparsers: Any) -> argparse.ArgumentParser:
    """``mailbot digest --call ID [--date D] (--preview FILE.html | --send)``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "digest", help="preview or send the coordinators' daily digest of a call"
    )
    parser.add_argument("--call", required=True, help="call id")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        help="the digest's day, YYYY-MM-DD (default: today in the [digest] time zone)",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--preview", type=Path, metavar="FILE.html", help="write the HTML here and print the text; send nothing"
    )
    action.add_argument("--send", action="store_true", help="queue the digest now and deliver the outbox")
    return parser


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    from mailbot.app import worker_name
    from mailbot.sender import Sender
    from storage.archive import RawArchive
    from storage.db import make_engine

    try:
        call = settings.call_by_id(args.call)
    except KeyError:
        print(f"mailbot digest: no call {args.call!r} in the configuration", file=sys.stderr)
        return 2
    wall_clock = utcnow()
    now = wall_clock  # the moment the digest shows: moved to the end of the day for a past day
    zone = ZoneInfo(settings.digest.timezone)
    today = now.astimezone(zone).date()
    day: date = args.date or today
    if day > today:
        print(f"mailbot digest: {day.isoformat()} has not come yet", file=sys.stderr)
        return 2
    if day < today:
        # the call as it stood at the end of that day, not today's state under that day's title
        now = datetime.combine(day + timedelta(days=1), time(0), zone) - timedelta(microseconds=1)
    templates = TemplateSet.from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        store = Storage(engine, RawArchive(settings.archive_dir))  # the caller checked the schema is current
        if args.preview is not None:
            with store.sessions() as session:
                data = build_digest(session, settings, call, day, now)
            subject, text, html = render_digest(data, templates)
            args.preview.write_text(html, encoding="utf-8")
            sys.stdout.write(f"Subject: {subject}\n\n{text}")
            print(f"HTML written to {args.preview}", file=sys.stderr)
            return 0
        outbox_id = queue_digest(store, settings, call, day, now, late=False, templates=templates, queued_at=wall_clock)
        if outbox_id is None:
            print(f"the {day.isoformat()} digest of {call.id} was already queued; delivering the outbox")
        Sender(settings, store, worker_name()).flush()
        with store.sessions() as session:
            run = session.get(DigestRun, (call.id, day))
            mail = session.get(OutboxMail, run.outbox_id) if run and run.outbox_id else None
            state = mail.state if mail else "missing"
            reply = mail.last_reply if mail else None
        print(f"digest {call.id} {day.isoformat()}: {state}{f' ({reply})' if reply else ''}")
        return 0 if state == OutboxState.SENT else 1
    finally:
        engine.dispose()
