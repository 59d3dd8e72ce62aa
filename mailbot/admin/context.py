"""The composition root of admin commands: the database, the archive and the review queue — nothing else.

``mailbot run`` builds a :class:`mailbot.worker.Worker`: it migrates the schema, starts a parser process
per core, takes mailbox leases. An admin command (``queue``, ``export``, ``purge``, ``bundle``,
``digest``) needs none of that: it opens an :class:`AdminContext`, which refuses a database whose
schema is not the one this mailbot was built for instead of changing it behind the admin's back
(the schema changes only in ``mailbot migrate``, ``mailbot check --fix`` and ``mailbot run``).
A queue action that must read a form again starts one parser process, when it first reads one.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from mailbot.config import Settings
from mailbot.pipeline import Pipeline
from mailbot.reading import limits_of
from mailbot.review import ReviewQueue
from mailbot.sender import Sender, SendResult
from mailbot.worker import worker_name
from parsers.model import Submission
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec
from storage import Storage
from storage.archive import RawArchive, make_private_dir
from storage.db import make_engine, schema_status, shipped_revision, upgrade
from templates import TemplateSet

EXIT_SCHEMA = 4  # `mailbot --help` lists it: the database needs `mailbot migrate` first


class SchemaNotCurrent(Exception):
    """The database's schema is not the one this mailbot needs; the message says what to run."""


def _database_file_missing(url: str) -> bool:
    """A SQLite database that does not exist yet: looking at its schema would create the file."""
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(str(database)).exists()
    )


def require_current_schema(settings: Settings, engine: Engine) -> None:
    """Raise :class:`SchemaNotCurrent` unless the database is at the newest shipped revision."""
    if _database_file_missing(settings.database_url):
        current, head = None, shipped_revision(engine)
    else:
        current, head = schema_status(engine)
    if current != head:
        raise SchemaNotCurrent(schema_sentence(current, head))


def schema_sentence(current: str | None, head: str | None) -> str:
    return (
        f"the database schema is at {current or 'nothing (an empty database)'}, this mailbot needs {head}: "
        "run `mailbot migrate` (or `mailbot check --fix`)"
    )


def check_schema(settings: Settings) -> None:
    """For a command that opens the database itself: stop before it reads a schema it does not know."""
    make_private_dir(settings.data_dir)  # as the service user only: a PermissionError here says so
    engine = make_engine(settings.database_url)
    try:
        require_current_schema(settings, engine)
    finally:
        engine.dispose()


def migrate(settings: Settings) -> tuple[str | None, str | None]:
    """Bring the schema to the newest revision: (the revision it was at, the one it is at now)."""
    make_private_dir(settings.data_dir)
    engine = make_engine(settings.database_url)
    try:
        before = None if _database_file_missing(settings.database_url) else schema_status(engine)[0]
        upgrade(engine)
        return before, schema_status(engine)[0]
    finally:
        engine.dispose()


class ReviewDesk(Protocol):
    """What the ``queue`` actions work with; a running Worker and an AdminContext both offer it."""

    settings: Settings
    store: Storage
    templates: TemplateSet
    review: ReviewQueue

    @property
    def pipeline(self) -> Pipeline: ...

    def send(self) -> list[SendResult]: ...


class AdminContext:
    """The Storage (database and archive), the review queue and the texts, opened for one admin command."""

    def __init__(self, settings: Settings) -> None:
        make_private_dir(settings.data_dir)  # as the service user only: a PermissionError here says so
        engine = make_engine(settings.database_url)
        try:
            require_current_schema(settings, engine)
        except BaseException:
            engine.dispose()
            raise
        self.settings = settings
        self.store = Storage(engine, RawArchive(settings.archive_dir))
        self.templates = TemplateSet(settings.templates.dir)
        self.review = ReviewQueue(settings.queue_dir, limits_of(settings))
        self.worker = worker_name()
        self._reader: ParserPool | None = None
        self._pipeline: Pipeline | None = None
        self._sender: Sender | None = None

    @property
    def pipeline(self) -> Pipeline:
        """Deciding again, as the pipeline does; built on first use (``list`` and ``show`` never use it)."""
        if self._pipeline is None:
            self._pipeline = Pipeline(self.settings, self.store, self._read, self.templates, self.review, self.worker)
        return self._pipeline

    def _read(self, original: Path, spec: FormSpec) -> Future[Submission]:
        """Read a form in one contained parser process, started for the first form an admin retries."""
        if self._reader is None:
            processing = self.settings.processing
            self._reader = ParserPool(
                1, processing.parse_timeout_s, processing.parse_memory_mb, limits_of(self.settings)
            )
        return self._reader.submit(original, spec)

    def send(self) -> list[SendResult]:
        """Deliver what the action put in the outbox (and whatever else is due)."""
        if self._sender is None:
            self._sender = Sender(self.settings, self.store, self.worker)
        try:
            return self._sender.flush()
        except Exception:
            # this command's claims go back now, not after their expiry; unless the database is what failed
            with suppress(Exception):
                self._sender.give_back()
            raise

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
        if self._reader is not None:
            self._reader.close()
        self.store.engine.dispose()

    def __enter__(self) -> AdminContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
