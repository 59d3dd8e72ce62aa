"""``mailbot status``: how is it doing? Polls, tokens, backlog, outbox, limits, the review queue, digests.

The figures come from ``storage.reports``; this module only words them for a person.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailbot.admin.context import SchemaNotCurrent, schema_sentence
from mailbot.clock import BEIJING, utcnow
from mailbot.config import Settings
from mailbot.oauth import token_statuses
from storage.db import make_engine, schema_status, session_factory
from storage.models import MessageState, OutboxState
from storage.reports import (
    answers_by_state,
    answers_held_back_since,
    bounced_answers,
    last_digest_day,
    latest_failed_answers,
    limit_hits_since,
    messages_by_state,
    oldest_review_arrival,
    poll_cursor,
    poll_failing,
)

FAILURES_SHOWN = 5


def _when(value: datetime | None) -> str:
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S %Z") if value else "never"


def failing_mailboxes(settings: Settings) -> list[str]:
    """The names of the configured mailboxes whose last poll failed (``status`` exits non-zero then)."""
    engine = make_engine(settings.database_url)
    try:
        if schema_status(engine)[0] is None:
            return []
        with session_factory(engine)() as session:
            return [box.name for box in settings.mailbox if poll_failing(poll_cursor(session, box.name, box.folder))]
    finally:
        engine.dispose()


def status_report(settings: Settings) -> str:
    engine = make_engine(settings.database_url)
    try:
        current, head = schema_status(engine)
        if current is None:
            return (
                "The database is empty: nothing has run yet "
                "(`mailbot migrate` or the first `mailbot run` creates it).\n"
            )
        if current != head:  # an older schema: its tables may lack what the report reads
            raise SchemaNotCurrent(schema_sentence(current, head))
        return _status_lines(settings, engine)
    finally:
        engine.dispose()


def _status_lines(settings: Settings, engine: Engine) -> str:
    with session_factory(engine)() as session:
        counts = messages_by_state(session)
        backlog = counts.get(MessageState.RECEIVED, 0) + counts.get(MessageState.PROCESSING, 0)
        oldest = oldest_review_arrival(session)
        lines = [
            *_mailbox_lines(session, settings),
            *_token_lines(session, settings),
            f"Backlog: {backlog} message(s) waiting to be decided",
            *_outbox_lines(session),
            f"Review queue: {counts.get(MessageState.REVIEW, 0)} item(s)"
            + (f", oldest arrived {_when(oldest)}" if oldest else ""),
            "Digests:",
        ]
        for call in settings.call:
            last = last_digest_day(session, call.id)
            lines.append(f"  {call.id:<16} last {last.isoformat() if last else 'none yet'}")
    return "\n".join(lines) + "\n"


def _mailbox_lines(session: Session, settings: Settings) -> list[str]:
    """Each mailbox's last good poll, and since when it fails if it does."""
    lines = ["Mailboxes:"]
    for box in settings.mailbox:
        cursor = poll_cursor(session, box.name, box.folder)
        line = f"  {box.name:<12} last good poll {_when(cursor.last_success if cursor else None)}"
        if cursor is not None and poll_failing(cursor):
            line += f"; NOW FAILING since {_when(cursor.last_error_at)}: {cursor.last_error}"
        lines.append(line)
    return lines


def _outbox_lines(session: Session) -> list[str]:
    """The outbox by state, the limits that held answers back, and the newest answers not delivered."""
    outbox = answers_by_state(session)
    in_flight = outbox.get(OutboxState.SENDING, 0) + outbox.get(OutboxState.COMMITTING, 0)
    lines = [
        f"Outbox: {outbox.get(OutboxState.PENDING, 0)} pending, {in_flight} sending, "
        f"{outbox.get(OutboxState.SENT, 0)} sent, {outbox.get(OutboxState.FAILED, 0)} failed, "
        f"{outbox.get(OutboxState.SUPPRESSED, 0)} held back, {bounced_answers(session)} bounced"
    ]
    lines.extend(_limit_lines(session))
    lines.extend(
        f"  not delivered: {mail.message_id} to {', '.join(mail.recipients) or '(purged)'}: {mail.last_reply}"
        for mail in latest_failed_answers(session, FAILURES_SHOWN)
    )
    return lines


def _limit_lines(session: Session) -> list[str]:
    """The answer limits hit in the last 24 hours, and how many answers they held back."""
    since = utcnow() - timedelta(days=1)
    lines = [
        f"  ANSWERS PAUSED since {_when(hit.at)} ({hit.detail.get('call')}): {hit.detail.get('why')}"
        for hit in limit_hits_since(session, since)
        if hit.detail
    ]
    if lines:
        held = answers_held_back_since(session, since)
        lines.append(f"  {held} answer(s) held back in the last 24 hours (recorded, not sent)")
    return lines


def _token_lines(session: Session, settings: Settings) -> list[str]:
    """Each OAuth2 account's refresh token: working, or what a person must do."""
    statuses = token_statuses(session, settings)
    if not statuses:
        return []
    lines = ["OAuth2:"]
    width = max(len(status.account) for status in statuses) + 1
    for status in statuses:
        if status.state is None:
            state = "no access token renewed yet"
        elif status.state == "valid":
            state = f"refresh token accepted {_when(status.since)}"
        else:
            state = f"{status.advice} (since {_when(status.since)}; the token endpoint said {status.said})"
        lines.append(f"  {status.account:<{width}} {state}")
    return lines
