"""Operations: ``check`` (can it run?), ``status`` (how is it doing?) and ``purge`` (personal data).

``purge`` exists for the data-protection duties of a fund office (China's PIPL, the EU's GDPR):
after a call is closed and its retention period has passed, raw messages, attachments and every
personal field go; anonymous counts, outcomes and reference numbers stay.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from mailbot.admin_context import SchemaNotCurrent, schema_sentence
from mailbot.clock import BEIJING, utcnow
from mailbot.config import ConfigError, Settings
from mailbot.config_accounts import MailboxSettings, SmtpSettings
from mailbot.export import pseudonym
from mailbot.imap import MailboxClient, MailboxUnavailable
from mailbot.oauth import Credentials, TokenRefused, token_statuses
from mailbot.review import ReviewQueue
from mailbot.sender import connect_smtp
from storage.archive import RawArchive
from storage.db import make_engine, schema_status, session_factory
from storage.events import EventKind
from storage.models import (
    Applicant,
    Application,
    AttachmentRecord,
    DigestRun,
    Event,
    MailboxCursor,
    Message,
    MessageState,
    OutboxMail,
    OutboxState,
)

# fields of a form that describe the science, not the person: kept by purge
ANONYMOUS_FIELDS = frozenset({"topic", "direction", "budget", "prior_grant"})


@dataclass(frozen=True)
class CheckLine:
    ok: bool
    what: str
    detail: str
    warning: bool = False  # works, but probably not as meant: shown, does not fail the check

    def __str__(self) -> str:
        mark = "WARN" if self.warning else "OK  " if self.ok else "FAIL"
        return f"{mark}  {self.what}: {self.detail}"


def configuration_warnings(settings: Settings) -> list[CheckLine]:
    """What a valid configuration probably did not mean: a call nobody reads, topics nobody can choose."""
    warnings = []
    read = {call_id for box in settings.mailbox for call_id in box.calls}
    for call in settings.call:
        if call.id not in read:
            warnings.append(
                CheckLine(True, f"call {call.id}", "no [[mailbox]] lists it in `calls`: its mail is never read", True)
            )
        topic_fields = [f.name for f in call.form_spec.fields if f.kind == "topic"]
        if topic_fields and not call.topic:
            warnings.append(
                CheckLine(
                    True,
                    f"call {call.id}",
                    f"field {topic_fields[0]!r} is a topic but the call has no [[call.topic]] list to check it against",
                    True,
                )
            )
    return warnings


def _token_note(account: MailboxSettings | SmtpSettings) -> str:
    """How the account's OAuth2 access token is kept current, for a check line."""
    if account.auth != "xoauth2":
        return ""
    if account.oauth is None:
        return (
            f" with the access token in {account.password_env}, which expires (usually within the hour): "
            "give an oauth table for unattended runs"
        )
    return f" with an access token renewed at {account.oauth.endpoint}"


def _check_mailbox(settings: Settings, credentials: Credentials, name: str) -> CheckLine:
    box = settings.mailbox_by_name(name)
    what = f"mailbox {box.name} ({box.user} at {box.host}:{box.port})"
    try:
        credential = credentials.of(box)
    except ConfigError as exc:
        return CheckLine(False, what, f"{exc}; export it before starting mailbot")
    try:
        with MailboxClient(box, credential, timeout_s=30) as client:
            state = client.select(box.folder)
    except MailboxUnavailable as exc:
        return CheckLine(False, what, str(exc))
    except Exception as exc:
        return CheckLine(False, what, f"folder {box.folder!r} cannot be opened: {exc}")
    return CheckLine(True, what, f"logged in{_token_note(box)}; {box.folder} holds {state.exists} message(s)")


def _check_smtp(settings: Settings, credentials: Credentials) -> CheckLine:
    cfg = settings.smtp
    what = f"SMTP {cfg.host}:{cfg.port} ({cfg.tls})"
    logs_in = bool(cfg.user and (cfg.password_env or cfg.oauth))
    try:
        if logs_in:
            credentials.of(cfg)
    except ConfigError as exc:
        return CheckLine(False, what, f"{exc}; export it before starting mailbot")
    try:
        with connect_smtp(settings, timeout_s=30, credentials=credentials) as smtp:
            smtp.noop()
    except TokenRefused as exc:
        return CheckLine(False, what, str(exc))
    except (OSError, smtplib.SMTPException) as exc:
        return CheckLine(False, what, f"cannot connect or log in: {exc.__class__.__name__}: {exc}")
    return CheckLine(True, what, "connected" + (f" and logged in{_token_note(cfg)}" if logs_in else ""))


def _check_database(settings: Settings) -> CheckLine:
    what = "database"
    try:
        engine = make_engine(settings.database_url)
        current, head = schema_status(engine)
        engine.dispose()
    except Exception as exc:
        return CheckLine(False, what, f"cannot open {settings.database_url.split('@')[-1]}: {exc}")
    if current is None:
        # a new installation: `run` creates the schema, so this is no reason not to start
        return CheckLine(
            True, what, f"empty; `mailbot migrate` (or `check --fix`, or the first `mailbot run`) creates schema {head}"
        )
    if current != head:
        return CheckLine(
            False,
            what,
            f"schema at {current}, this version needs {head}: run `mailbot migrate` (or `mailbot check --fix`), "
            "or check you point at the right database",
        )
    return CheckLine(True, what, f"schema {current} is current")


def _check_writable(label: str, path: os.PathLike[str] | str) -> CheckLine:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-"):
            pass
    except OSError as exc:
        return CheckLine(False, label, f"{path} is not writable: {exc.strerror}")
    return CheckLine(True, label, f"{path} is writable")


def run_checks(settings: Settings) -> list[CheckLine]:
    lines = [CheckLine(True, "configuration", f"{len(settings.call)} call(s), {len(settings.mailbox)} mailbox(es)")]
    lines.extend(configuration_warnings(settings))
    lines.append(_check_writable("data directory", settings.data_dir))
    lines.append(_check_writable("archive", settings.archive_dir))
    lines.append(_check_writable("review queue", settings.queue_dir))
    lines.append(_check_database(settings))
    credentials = Credentials(settings)
    lines.extend(_check_mailbox(settings, credentials, box.name) for box in settings.mailbox)
    lines.append(_check_smtp(settings, credentials))
    return lines


# --- status -----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S %Z") if value else "never"


FAILURES_SHOWN = 5


def _is_failing(cursor: MailboxCursor) -> bool:
    """The last poll of the folder failed (an error newer than its last good poll)."""
    if not cursor.last_error:
        return False
    return cursor.last_success is None or (
        cursor.last_error_at is not None and cursor.last_error_at > cursor.last_success
    )


def failing_mailboxes(settings: Settings) -> list[str]:
    """The names of the configured mailboxes whose last poll failed (``status`` exits non-zero then)."""
    engine = make_engine(settings.database_url)
    try:
        if schema_status(engine)[0] is None:
            return []
        with session_factory(engine)() as session:
            cursors = [session.get(MailboxCursor, (box.name, box.folder)) for box in settings.mailbox]
            return [cursor.mailbox for cursor in cursors if cursor is not None and _is_failing(cursor)]
    finally:
        engine.dispose()


def _limit_lines(session: Session) -> list[str]:
    """The answer limits hit in the last 24 hours, and how many answers they held back."""
    since = utcnow() - timedelta(days=1)
    hits = session.scalars(
        select(Event).where(Event.kind == EventKind.ANSWER_LIMIT, Event.at >= since).order_by(Event.at)
    )
    lines = [
        f"  ANSWERS PAUSED since {_when(hit.at)} ({hit.detail.get('call')}): {hit.detail.get('why')}"
        for hit in hits
        if hit.detail
    ]
    if lines:
        held = session.scalar(
            select(func.count())
            .select_from(OutboxMail)
            .where(OutboxMail.state == OutboxState.SUPPRESSED, OutboxMail.created_at >= since)
        )
        lines.append(f"  {held or 0} answer(s) held back in the last 24 hours (recorded, not sent)")
    return lines


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
    lines: list[str] = []
    with session_factory(engine)() as session:
        lines.append("Mailboxes:")
        for box in settings.mailbox:
            cursor = session.get(MailboxCursor, (box.name, box.folder))
            success = cursor.last_success if cursor else None
            error = cursor.last_error if cursor else None
            line = f"  {box.name:<12} last good poll {_when(success)}"
            if cursor is not None and _is_failing(cursor):
                line += f"; NOW FAILING since {_when(cursor.last_error_at)}: {error}"
            lines.append(line)
        lines.extend(_token_lines(session, settings))
        counts = dict(session.execute(select(Message.state, func.count()).group_by(Message.state)).all())
        backlog = counts.get(MessageState.RECEIVED, 0) + counts.get(MessageState.PROCESSING, 0)
        lines.append(f"Backlog: {backlog} message(s) waiting to be decided")
        outbox = dict(session.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state)).all())
        bounced = session.scalar(select(func.count()).select_from(OutboxMail).where(OutboxMail.bounced_at.is_not(None)))
        in_flight = outbox.get(OutboxState.SENDING, 0) + outbox.get(OutboxState.COMMITTING, 0)
        lines.append(
            f"Outbox: {outbox.get(OutboxState.PENDING, 0)} pending, {in_flight} sending, "
            f"{outbox.get(OutboxState.SENT, 0)} sent, {outbox.get(OutboxState.FAILED, 0)} failed, "
            f"{outbox.get(OutboxState.SUPPRESSED, 0)} held back, {bounced or 0} bounced"
        )
        lines.extend(_limit_lines(session))
        failed = session.scalars(
            select(OutboxMail)
            .where(OutboxMail.state == OutboxState.FAILED)
            .order_by(OutboxMail.id.desc())
            .limit(FAILURES_SHOWN)
        )
        lines.extend(
            f"  not delivered: {mail.message_id} to {', '.join(mail.recipients) or '(purged)'}: {mail.last_reply}"
            for mail in failed
        )
        oldest = session.scalar(select(func.min(Message.arrival)).where(Message.state == MessageState.REVIEW))
        lines.append(
            f"Review queue: {counts.get(MessageState.REVIEW, 0)} item(s)"
            + (f", oldest arrived {_when(oldest)}" if oldest else "")
        )
        lines.append("Digests:")
        for call in settings.call:
            last = session.scalar(select(func.max(DigestRun.day)).where(DigestRun.call_id == call.id))
            lines.append(f"  {call.id:<16} last {last.isoformat() if last else 'none yet'}")
    return "\n".join(lines) + "\n"


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


# --- purge ------------------------------------------------------------------------------------


@dataclass
class PurgeReport:
    messages: int = 0
    raw_files: int = 0
    queue_folders: int = 0
    applications: int = 0

    def __str__(self) -> str:
        return (
            f"{self.messages} message(s), {self.raw_files} raw file(s), {self.queue_folders} queue folder(s), "
            f"{self.applications} application(s)"
        )


def _chunks(items: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def purge(settings: Settings, call_id: str, before: datetime, dry_run: bool, actor: str) -> PurgeReport:
    """Remove personal data of ``call_id`` for messages that arrived before ``before``."""
    call = settings.call_by_id(call_id)
    if call.effective_deadline > utcnow():
        raise ConfigError(f"call {call_id} is still open (deadline {call.deadline.isoformat()}): nothing is purged")
    engine = make_engine(settings.database_url)
    try:
        report = _purge_rows(settings, engine, call_id, before, dry_run, actor)
        if not dry_run:
            _scrub_freed_space(engine)
        return report
    finally:
        engine.dispose()


def _scrub_freed_space(engine: Engine) -> None:
    """Rewrite a SQLite file so the purged values are gone from its free pages and its WAL too.

    SQLite leaves deleted and overwritten bytes in free space unless built with SECURE_DELETE
    (most builds are not); PostgreSQL's own files are not under the data directory.
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM")
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _purge_rows(
    settings: Settings, engine: Engine, call_id: str, before: datetime, dry_run: bool, actor: str
) -> PurgeReport:
    now = utcnow()
    archive = RawArchive(settings.archive_dir)
    queue = ReviewQueue(settings.queue_dir)
    report = PurgeReport()
    with session_factory(engine)() as session, session.begin():
        messages = list(
            session.scalars(
                select(Message).where(Message.call_id == call_id, Message.arrival < before, Message.purged_at.is_(None))
            )
        )
        report.messages = len(messages)
        pks = [m.id for m in messages]
        shas_elsewhere = set(session.scalars(select(Message.sha256).where(Message.id.not_in(pks or [-1]))))
        for message in messages:
            if archive.contains(message.sha256) and message.sha256 not in shas_elsewhere:
                report.raw_files += 1
                if not dry_run:
                    archive.remove(message.sha256)
            folder = queue.folder_of(message)
            if folder.exists():
                report.queue_folders += 1
                if not dry_run:
                    shutil.rmtree(folder)
        applications = list(
            session.scalars(
                select(Application).where(Application.call_id == call_id, Application.current_message_pk.in_(pks))
            )
        )
        report.applications = len(applications)
        if dry_run:
            session.rollback()
            return report
        for message in messages:
            decision = message.decision or {}
            message.decision = {k: decision.get(k) for k in ("outcome", "rule", "missing", "flags") if k in decision}
            message.reading = None
            message.subject = ""
            message.from_addr = ""
            message.error = None
            message.project_title = None
            message.person_email = message.person_phone = None
            message.person_name_key = message.person_institution_key = None
            message.message_id = None
            message.message_key = pseudonym(message.message_key) or message.message_key
            message.supersedes_key = pseudonym(message.supersedes_key)
            message.duplicate_of_key = pseudonym(message.duplicate_of_key)
            message.purged_at = now
        for application in applications:
            application.fields = {k: v for k, v in (application.fields or {}).items() if k in ANONYMOUS_FIELDS}
            application.project_title = None
            application.application_key = pseudonym(application.application_key) or application.application_key
            application.duplicate_of_key = pseudonym(application.duplicate_of_key)
            applicant = session.get(Applicant, application.applicant_id)
            if applicant is not None:
                applicant.name = applicant.name_key = applicant.institution_key = None
                applicant.email = applicant.phone = None
        for chunk in _chunks(pks):
            session.execute(
                update(AttachmentRecord).where(AttachmentRecord.message_pk.in_(chunk)).values(filename="(purged)")
            )
            session.execute(
                update(OutboxMail)
                .where(OutboxMail.message_pk.in_(chunk))
                .values(raw=b"", recipients=[], to_addr=None, to_key=None, to_domain=None, last_reply=None)
            )
            session.execute(update(Event).where(Event.message_pk.in_(chunk)).values(detail={}))
        # digests list new submissions by name and carry the workbook: they go with the call's data
        session.execute(
            update(OutboxMail)
            .where(OutboxMail.kind == "digest", OutboxMail.call_id == call_id)
            .values(raw=b"", recipients=[], to_addr=None, to_key=None, to_domain=None, last_reply=None)
        )
        session.add(
            Event(
                at=now,
                kind="purged",
                actor=actor,
                message_pk=None,
                detail={"call": call_id, "before": before.isoformat(), "messages": report.messages},
            )
        )
    return report


def default_purge_before(settings: Settings, call_id: str) -> datetime:
    call = settings.call_by_id(call_id)
    if call.retention_days is None:
        raise ConfigError(f"call {call_id} has no retention_days: give --before DATE")
    return utcnow() - timedelta(days=call.retention_days)
