"""``mailbot purge``: personal data of a closed call, removed after its retention period.

``purge`` exists for the data-protection duties of a fund office (China's PIPL, the EU's GDPR):
after a call is closed and its retention period has passed, raw messages, attachments and every
personal field go; anonymous counts, outcomes and reference numbers stay. The rows are scrubbed in
one transaction (its statements are ``storage/purge.py``'s), which adds the deletion of each
message's archive file and review folder as effects (``mailbot.effects``): they run once it has
committed, and again after a stop, so a file is never deleted for a purge that did not happen.
(``check`` is in ``mailbot.admin.checks``, ``status`` in ``mailbot.admin.status``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailbot.clock import utcnow
from mailbot.config import ConfigError, Settings
from mailbot.effect_runner import EffectRunner
from mailbot.effects import add_purge_effects
from mailbot.export import pseudonym
from mailbot.review import ReviewQueue
from storage import Storage
from storage.archive import RawArchive
from storage.db import make_engine, session_factory
from storage.effects import DueEffect
from storage.events import EventKind
from storage.models import Applicant, Application, Event, Message
from storage.purge import (
    applications_to_purge,
    forget_effects_of_purged,
    hashes_kept_by_others,
    messages_to_purge,
    scrub_answers_attachments_and_events,
)

# fields of a form that describe the science, not the person: kept by purge
ANONYMOUS_FIELDS = frozenset({"topic", "direction", "budget", "prior_grant"})


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


def purge(settings: Settings, call_id: str, before: datetime, dry_run: bool, actor: str) -> PurgeReport:
    """Remove personal data of ``call_id`` for messages that arrived before ``before``.

    The rows are scrubbed in one transaction, which also adds the deletion of each message's
    archive file and review folder as effects; they run once it commits (and again after a stop).
    """
    call = settings.call_by_id(call_id)
    if call.effective_deadline > utcnow():
        raise ConfigError(f"call {call_id} is still open (deadline {call.deadline.isoformat()}): nothing is purged")
    engine = make_engine(settings.database_url)
    try:
        worker = f"purge:{actor}"
        report, deletions = _purge_rows(settings, engine, call_id, before, dry_run, worker)
        if not dry_run:
            EffectRunner(settings, Storage(engine, RawArchive(settings.archive_dir)), worker).run_claimed(deletions)
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
    settings: Settings, engine: Engine, call_id: str, before: datetime, dry_run: bool, worker: str
) -> tuple[PurgeReport, list[DueEffect]]:
    """Scrub the rows; returns the report and the deletions (claimed by ``worker``) the commit implies."""
    deletions: list[DueEffect] = []
    archive = RawArchive(settings.archive_dir)
    queue = ReviewQueue(settings.queue_dir)
    report = PurgeReport()
    with session_factory(engine)() as session, session.begin():
        messages = messages_to_purge(session, call_id, before)
        report.messages = len(messages)
        pks = [m.id for m in messages]
        shas_elsewhere = hashes_kept_by_others(session, pks)
        forget_effects_of_purged(session, pks, utcnow())
        for message in messages:
            sole_copy = message.sha256 not in shas_elsewhere
            report.raw_files += archive.contains(message.sha256) and sole_copy
            report.queue_folders += queue.folder_of(message).exists()
            if not dry_run:
                deletions += add_purge_effects(session, message, worker, delete_archive_file=sole_copy)
        applications = applications_to_purge(session, call_id, pks)
        report.applications = len(applications)
        if dry_run:
            session.rollback()
            return report, []
        _scrub_messages(messages, utcnow())
        _scrub_applications(session, applications)
        scrub_answers_attachments_and_events(session, call_id, pks)
        session.add(
            Event(
                at=utcnow(),
                kind=EventKind.PURGED,
                actor=worker.removeprefix("purge:"),
                message_pk=None,
                detail={"call": call_id, "before": before.isoformat(), "messages": report.messages},
            )
        )
    return report, deletions


def _scrub_messages(messages: list[Message], now: datetime) -> None:
    """Keep of each message what is anonymous: its outcome, rule and reference; pseudonyms for its keys."""
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


def _scrub_applications(session: Session, applications: list[Application]) -> None:
    """Keep of each application the fields that describe the science, and nothing of its applicant."""
    for application in applications:
        application.fields = {k: v for k, v in (application.fields or {}).items() if k in ANONYMOUS_FIELDS}
        application.project_title = None
        application.application_key = pseudonym(application.application_key) or application.application_key
        application.duplicate_of_key = pseudonym(application.duplicate_of_key)
        applicant = session.get(Applicant, application.applicant_id)
        if applicant is not None:
            applicant.name = applicant.name_key = applicant.institution_key = None
            applicant.email = applicant.phone = None


def default_purge_before(settings: Settings, call_id: str) -> datetime:
    call = settings.call_by_id(call_id)
    if call.retention_days is None:
        raise ConfigError(f"call {call_id} has no retention_days: give --before DATE")
    return utcnow() - timedelta(days=call.retention_days)
