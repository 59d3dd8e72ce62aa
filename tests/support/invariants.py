"""The promises a fault must not break, checked against the database, the raw archive, the review
queue and the mail the SMTP server accepted: every message exactly one record with its true outcome
and its exact bytes in the archive, every answerable message exactly one answer, nothing left
half-sent, every review item a folder with ``message.eml`` and ``reason.json``, reference numbers
unique and without gaps per call, no mail (a digest above all) accepted twice, every effect of a
commit (review folder, IMAP move, Sent copy, purge deletion) done, and nothing of a purged message
left in the archive or the review queue.

One exception is the sender's design, not a fault: a stop between committing an answer's hand-over
and writing the last line of its data leaves an answer the server never got, recorded as presumed
delivered (a second copy would be the worse mistake) and listed in the coordinators' digest. Each
stop of a sending worker can leave at most one such answer, so a caller that stopped workers says
how many times.

The outcomes that get an answer are written out here rather than taken from the bot, so a change
in the bot cannot quietly change what the tests expect.
"""

from __future__ import annotations

import email
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from mailbot.config import Settings
from mailbot.review import ReviewQueue
from storage.archive import RawArchive
from storage.db import make_engine, session_factory
from storage.effects import undone_effects
from storage.events import EventKind
from storage.models import Event, Message, MessageState, OutboxMail, OutboxState, SendVerdict

ANSWERED_OUTCOMES = frozenset(
    {"accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable"}
)
SETTLED_OUTBOX = frozenset({OutboxState.SENT, OutboxState.SUPPRESSED})
# what the pipeline records when a stage failed rather than the message being unreadable
FAILURE_REASON = "internal-error"

Truth = Mapping[str, Mapping[str, Any]]


def is_notice(raw: bytes) -> bool:
    """A fixed-text notice (``Auto-Submitted: auto-generated``): it answers nobody, so it is no answer."""
    return str(email.message_from_bytes(raw).get("Auto-Submitted", "")).strip().lower() == "auto-generated"


def answers_by_original(raws: Iterable[bytes]) -> Counter[str]:
    """How many answers the server accepted for each original message, by the answer's In-Reply-To."""
    replies = (str(email.message_from_bytes(raw).get("In-Reply-To", "")).strip() for raw in raws if not is_notice(raw))
    return Counter(original for original in replies if original)  # a digest answers nothing


def invariant_violations(settings: Settings, truth: Truth, accepted_mail: Iterable[bytes], stops: int = 0) -> list[str]:
    """Every broken promise, one line each (an empty list when all hold).

    ``truth`` maps a corpus name to its truth record (``message_id``, ``outcome``); it must name
    every message the mailboxes held. ``accepted_mail`` is the raw mail the SMTP server accepted.
    ``stops`` is how many times a sending worker was killed: up to that many answers recorded as
    presumed delivered may be missing.
    """
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            messages = list(session.scalars(select(Message)))
            outbox = list(session.scalars(select(OutboxMail).order_by(OutboxMail.id)))
            events = list(session.scalars(select(Event).where(Event.kind.like("outbox-%")).order_by(Event.id)))
            undone = undone_effects(session)
    finally:
        engine.dispose()
    archive = RawArchive(settings.archive_dir)
    answers = answers_by_original(accepted_mail)
    name_of = {info["message_id"]: name for name, info in truth.items()}
    problems: list[str] = []
    presumed_rows = {
        e.detail.get("outbox_id")
        for e in events
        if e.kind == EventKind.OUTBOX_RECOVERED and e.detail.get("verdict") == SendVerdict.PRESUMED.value
    }
    presumed = {row.message_pk for row in outbox if row.id in presumed_rows}
    presumed_missing = []

    records = Counter(m.message_key for m in messages)
    problems.extend(f"{key}: recorded but not in the mailboxes" for key in sorted(set(records) - set(name_of)))
    problems.extend(f"{key}: answered but not in the mailboxes" for key in sorted(set(answers) - set(name_of)))
    for message in messages:
        name = name_of.get(message.message_key, message.message_key)
        if message.state not in (MessageState.DONE, MessageState.REVIEW) or message.outcome is None:
            problems.append(f"{name}: left {message.state} without an outcome")
        if message.reason == FAILURE_REASON:
            problems.append(f"{name}: ended in review because a stage failed: {(message.error or '')[-300:]}")
        if not archive.contains(message.sha256):
            problems.append(f"{name}: its raw copy is not in the archive")
        elif hashlib.sha256(archive.get(message.sha256)).hexdigest() != message.sha256:
            problems.append(f"{name}: its archive file does not hold the bytes it is named by")
    problems.extend(_review_folder_problems(settings, messages, name_of))
    problems.extend(f"effect {id_} ({kind}) not done after {n} attempt(s): {error}" for id_, kind, n, error in undone)
    problems.extend(_purged_file_problems(settings, messages, archive))
    problems.extend(_reference_problems(messages))
    problems.extend(_mail_accepted_twice(accepted_mail))

    by_key = {m.message_key: m for m in messages}
    for name, info in sorted(truth.items()):
        key, expected = info["message_id"], info["outcome"]
        if records[key] != 1:
            problems.append(f"{name}: {records[key]} records")
            continue
        message = by_key[key]
        if message.outcome != expected:
            problems.append(f"{name}: outcome {message.outcome}, the truth says {expected}")
        wanted = 1 if expected in ANSWERED_OUTCOMES else 0
        if answers[key] == 0 and wanted == 1 and message.id in presumed:
            presumed_missing.append(name)
        elif answers[key] != wanted:
            history = _answer_history(message.id, outbox, events)
            problems.append(f"{name} ({expected}): {answers[key]} answers, expected {wanted}; {history}")

    problems.extend(
        f"outbox {row.id} ({row.message_id}) left {row.state}: {row.last_reply}"
        for row in outbox
        if row.state not in SETTLED_OUTBOX
    )
    if len(presumed_missing) > stops:
        problems.append(f"{len(presumed_missing)} answers presumed delivered never arrived, after {stops} stop(s)")
    return problems


def _review_folder_problems(settings: Settings, messages: list[Message], name_of: Mapping[str, str]) -> list[str]:
    """Every message in review has its queue folder with the original and the reason."""
    queue = ReviewQueue(settings.queue_dir)
    problems = []
    for message in messages:
        if message.state != MessageState.REVIEW:
            continue
        folder = queue.folder_of(message)
        missing = [f for f in ("message.eml", "reason.json") if not (folder / f).is_file()]
        if missing:
            name = name_of.get(message.message_key, message.message_key)
            problems.append(f"{name}: in review, but {folder.name}/ lacks {', '.join(missing)}")
    return problems


def _purged_file_problems(settings: Settings, messages: list[Message], archive: RawArchive) -> list[str]:
    """A purged message has no review folder, and no archive file unless a message kept has its bytes."""
    queue = ReviewQueue(settings.queue_dir)
    kept = {m.sha256 for m in messages if m.purged_at is None}
    problems = []
    for message in messages:
        if message.purged_at is None:
            continue
        if message.sha256 not in kept and archive.contains(message.sha256):
            problems.append(f"purged message {message.id}: its archive file remains")
        if queue.folder_of(message).exists():
            problems.append(f"purged message {message.id}: its review folder remains")
    return problems


def _reference_problems(messages: list[Message]) -> list[str]:
    """Reference numbers are unique per call and count up from 1 without gaps.

    A number is taken in the decision's transaction, so a decision that did not commit gives its
    number back; a gap would mean a number was spent on nothing.
    """
    numbers: defaultdict[str, list[int]] = defaultdict(list)
    for message in messages:
        parts = re.fullmatch(r"(.+)-(\d+)", message.reference or "")
        if parts:
            numbers[parts[1]].append(int(parts[2]))
    problems = []
    for prefix, taken in sorted(numbers.items()):
        repeated = sorted(n for n, count in Counter(taken).items() if count > 1)
        if repeated:
            problems.append(f"{prefix}: reference numbers given twice: {repeated}")
        gaps = sorted(set(range(1, max(taken) + 1)) - set(taken))
        if gaps:
            problems.append(f"{prefix}: reference numbers never given: {gaps}")
    return problems


def _mail_accepted_twice(accepted_mail: Iterable[bytes]) -> list[str]:
    """No mail (an answer, a digest) reached the SMTP server twice: each has one Message-ID."""
    ids = Counter(str(email.message_from_bytes(raw).get("Message-ID", "")).strip() for raw in accepted_mail)
    return [f"{message_id}: accepted {count} times" for message_id, count in sorted(ids.items()) if count > 1]


def _answer_history(message_pk: int, outbox: list[OutboxMail], events: list[Event]) -> str:
    """What the outbox did with the answers to a message: the evidence for a missing or double answer."""
    rows = [row for row in outbox if row.message_pk == message_pk]
    if not rows:
        return "no outbox row answers it"
    parts = []
    for row in rows:
        steps = [f"{e.kind} {e.detail}" for e in events if (e.detail or {}).get("outbox_id") == row.id]
        parts.append(f"outbox {row.id} {row.state} after {row.attempts} attempt(s): {' -> '.join(steps)}")
    return "; ".join(parts)
