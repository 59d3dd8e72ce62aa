"""The digest's data: the numbers, bars and lists of one call on one day, read from the database.

:func:`build_digest` reads and never writes, so a digest can be previewed, tested and rebuilt for
any day: everything is computed from what had arrived and been decided at the digest's moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from mailbot.config import CallSettings, DigestSettings, Settings
from mailbot.decision import Outcome
from mailbot.digest.attention import (
    AckProblem,
    Correspondence,
    DuplicateCase,
    FlaggedApplication,
    ReviewItem,
    ack_problems,
    correspondence,
    duplicates,
    flagged,
    review_queue,
    text_cell,
)
from mailbot.digest.moment import SUBMISSION_OUTCOMES, applications_at, by_outcome, decisions_at
from mailbot.export import ApplicationAt, message_fields
from mailbot.institutions import normalise_institution
from mailbot.oauth import TokenStatus, token_problems
from storage.digests import last_digest_at
from storage.models import Message

TOP_INSTITUTIONS = 10


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
    since = last_digest_at(session, call.id, day)
    standing = decisions_at(session, call.id, now)
    messages = [m for m, _ in standing.values()]
    outcome_of = {m.id: then.outcome for m, then in standing.values()}
    decided_at = {m.id: then.at for m, then in standing.values()}
    fresh = [m for m in messages if since is None or decided_at[m.id] > since]
    applications = applications_at(session, call.id, standing)
    submission_outcomes = {o.value for o in SUBMISSION_OUTCOMES}
    return DigestData(
        call=call,
        schedule=settings.digest,
        day=day,
        generated_at=now,
        late=late,
        since=since,
        totals=by_outcome(outcome_of[m.id] for m in messages),
        new=by_outcome(outcome_of[m.id] for m in fresh),
        applications=len(applications),
        applicants=len({view.application.applicant_id for view in applications}),
        countdown=Countdown(call.deadline, call.effective_deadline - now),
        directions=_direction_bars(call, applications),
        institutions=_institution_bars(call, applications),
        submissions=tuple(
            _new_submission(call, m, outcome_of[m.id]) for m in fresh if outcome_of[m.id] in submission_outcomes
        ),
        duplicates=duplicates(session, applications),
        flagged=flagged(session, applications),
        correspondence=tuple(correspondence(m) for m in fresh if outcome_of[m.id] == Outcome.CORRESPONDENCE.value),
        review=review_queue(session, standing, now),
        ack_problems=ack_problems(session, call.id, since, now),
        token_problems=token_problems(session, settings, call.id),
    )


def topic_label(call: CallSettings, code: object) -> str:
    """``3.2 自动评测与作文批改`` for a known code, the written value otherwise."""
    text = text_cell(code)
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
    per_topic = Counter(text_cell(view.fields.get("topic")) for view in applications)
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
    written = text_cell(view.fields.get("institution"))
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
        applicant=text_cell(fields.get("applicant_name")),
        institution=text_cell(fields.get("institution")),
        title=text_cell(fields.get("project_title")),
        topic=topic_label(call, fields.get("topic")),
        arrival=message.arrival,
    )
