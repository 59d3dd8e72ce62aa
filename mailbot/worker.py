"""A worker: the composition root that builds the stores, the parser pool, the stages and their runners.

``Worker.single_pass`` is ``mailbot run --once`` (cron, tests, back-fills); ``Worker.run_until_stopped``
is ``mailbot run``: one intake runner per mailbox (IDLE where the server has it, polling otherwise),
a deciding and a sending runner, woken by each other so an acknowledgement leaves as soon as it is
decided (``mailbot.runners``). Several workers may share a PostgreSQL database: a mailbox is polled
only by the worker holding its lease, while every worker decides and sends (``mailbot.coordination``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import Future
from pathlib import Path

from mailbot.config import Settings
from mailbot.effect_runner import EffectRunner
from mailbot.metrics import StageTimings
from mailbot.oauth import Credentials, record_token_states
from mailbot.pipeline import Pipeline
from mailbot.reading import READ_AHEAD_MAX, Reader, limits_of
from mailbot.review import ReviewQueue
from mailbot.runners import drivers
from mailbot.runners.base import Runner
from mailbot.runners.deciding import DecidingRunner
from mailbot.runners.digests import DigestRunner
from mailbot.runners.effects import EffectsRunner
from mailbot.runners.intake import IntakeRunner
from mailbot.runners.sending import SendingRunner
from mailbot.scheduling import DigestScheduler
from mailbot.sender import Sender, SendResult
from parsers import read_message
from parsers.limits import Limits
from parsers.model import Envelope, Submission
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec
from storage import Storage
from storage.archive import RawArchive, make_private_dir
from storage.db import make_engine, upgrade
from storage.decisions import ArchivedCopy
from templates import TemplateSet

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def inline_reader(limits: Limits) -> Reader:
    """Read in this process (no containment): the single-process mode of benchmarks and debugging."""

    def read(original: Path, spec: FormSpec) -> Future[Submission]:
        done: Future[Submission] = Future()
        done.set_result(read_message(original.read_bytes(), spec, limits))
        return done

    return read


class Worker:
    """One worker process of mailbot and everything it runs; ``inline`` reads forms without a parser pool.

    ``digests`` adds the daily digest schedule (``mailbot run``; tests and benchmarks leave it out).
    """

    def __init__(self, settings: Settings, inline: bool = False, digests: bool = False) -> None:
        self.settings = settings
        make_private_dir(settings.data_dir)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        self.store = Storage(engine, RawArchive(settings.archive_dir))
        self.templates = TemplateSet(settings.templates.dir)
        limits = limits_of(settings)
        self.review = ReviewQueue(settings.queue_dir, limits)
        self.name = worker_name()
        processing = settings.processing
        self.pool: ParserPool | None = None
        reader: Reader = inline_reader(limits)
        if not inline:
            self.pool = ParserPool(processing.workers, processing.parse_timeout_s, processing.parse_memory_mb, limits)
            reader = self.pool.submit
        self.stopping = threading.Event()
        self.timings = StageTimings()
        self.pipeline = Pipeline(
            settings,
            self.store,
            reader,
            self.templates,
            self.review,
            self.name,
            on_decided=lambda _result: self.sending.wake.set(),
            timings=self.timings,
            # ahead of claims only where this worker alone claims: elsewhere another might read them again
            read_ahead_max=READ_AHEAD_MAX if self.pool is not None and not self.store.concurrent else 0,
        )
        # one access token per refresh token for the intake runners and the sender together
        self.credentials = Credentials(settings, record_token_states(self.store))
        self.sender = Sender(settings, self.store, self.name, self.timings, self.credentials)
        self.runners = self._runners(digests)

    def _runners(self, digests: bool) -> list[Runner]:
        """Every runner of this worker, in stage order; a new stage is one more line here."""
        parsers_at_once = self.pool.workers if self.pool is not None else 1
        self.effects = EffectsRunner(
            EffectRunner(self.settings, self.store, self.name, self.review, self.credentials), self.stopping
        )
        self.deciding = DecidingRunner(
            self.settings, self.store, self.pipeline, self.name, parsers_at_once, self.stopping, self.effects.wake
        )
        self.sending = SendingRunner(self.sender, self.stopping)
        self.intake = {
            box.name: IntakeRunner(
                self.settings, box, self.store, self.credentials, self.timings, self._archived, self.stopping
            )
            for box in self.settings.mailbox
        }
        return [
            *self.intake.values(),
            self.deciding,
            self.sending,
            self.effects,
            *([self._digest_runner()] if digests else []),
        ]

    def _digest_runner(self) -> DigestRunner:
        """The daily digests, queued into the outbox; each wakes sending."""
        schedule = DigestScheduler(self.settings, self.store, self.templates, on_queued=self.sending.wake.set)
        return DigestRunner(schedule, self.stopping)

    def _archived(self, pk: int, copy: ArchivedCopy | None, envelope: Envelope | None) -> None:
        """Intake has archived and recorded a message (and read its header section): start reading
        it, and wake deciding."""
        self.pipeline.readings.read_ahead(pk, envelope, copy)
        self.deciding.wake.set()

    def single_pass(self) -> drivers.RunSummary:
        """``mailbot run --once``: every mailbox read, then everything decided while answers go out."""
        return drivers.single_pass(self.runners)

    def run_until_stopped(self) -> None:
        """``mailbot run``: every runner in a thread of its own until :meth:`stop`."""
        drivers.run_until_stopped(
            self.runners, self.stopping, f"running: {len(self.settings.mailbox)} mailbox(es), worker {self.name}"
        )

    def send(self) -> list[SendResult]:
        """Send what is due now (a :class:`mailbot.admin.context.ReviewDesk` sends right after a queue action)."""
        return self.sending.send()

    def stop(self) -> None:
        self.stopping.set()
        for runner in self.runners:
            runner.wake.set()

    def close(self) -> None:
        self.sender.close()
        for runner in self.runners:
            runner.close()
        if self.pool is not None:
            self.pool.close()
        self.store.engine.dispose()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
