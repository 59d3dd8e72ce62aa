"""Wiring: one object that owns the stores, the parser pool and the stages, and runs them.

``run_once`` is the batch form (cron, tests, back-fills); ``run_forever`` keeps one intake thread
per mailbox (IDLE where the server has it, polling otherwise), a processing thread and a sending
thread, woken by each other so an acknowledgement leaves as soon as it is decided. Several workers
may share a PostgreSQL database: a mailbox is polled only by the worker holding its lease, while
every worker processes and sends (see ``mailbot.coordination``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from mailbot.config import Settings
from mailbot.config_accounts import MailboxSettings
from mailbot.coordination import MailboxLease
from mailbot.imap import MailboxClient, MailboxUnavailable
from mailbot.intake import PollResult, poll_folder
from mailbot.metrics import StageTimings
from mailbot.oauth import Credentials, record_token_states
from mailbot.pipeline import READ_AHEAD_MAX, Processed, Processor, Reader, limits_of
from mailbot.review import ReviewQueue
from mailbot.sender import Sender, SendResult
from parsers import read_message
from parsers.limits import Limits
from parsers.model import Submission
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec
from storage import Storage
from storage.archive import RawArchive, make_private_dir
from storage.db import make_engine, upgrade
from storage.models import Message
from templates import TemplateSet

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
GIVE_BACK_WITHIN_S = 30.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def inline_reader(limits: Limits) -> Reader:
    """Read in this process (no containment): the single-process mode of benchmarks and debugging."""

    def read(original: Path, spec: FormSpec) -> Future[Submission]:
        done: Future[Submission] = Future()
        done.set_result(read_message(original.read_bytes(), spec, limits))
        return done

    return read


def failure_text(box: MailboxSettings, exc: Exception) -> str:
    """What went wrong with ``box``, naming the mailbox once (MailboxUnavailable names it already)."""
    return str(exc) if isinstance(exc, MailboxUnavailable) else f"mailbox {box.name}: {exc}"


@dataclass
class RunSummary:
    polled: list[PollResult] = field(default_factory=list)
    processed: list[Processed] = field(default_factory=list)
    sent: list[SendResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Bot:
    def __init__(self, settings: Settings, inline: bool = False) -> None:
        self.settings = settings
        make_private_dir(settings.data_dir)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        self.store = Storage(engine, RawArchive(settings.archive_dir))
        self.leases = {box.name: MailboxLease(engine, box.name) for box in settings.mailbox}
        self.templates = TemplateSet(settings.templates.dir)
        limits = limits_of(settings)
        self.review = ReviewQueue(settings.queue_dir, limits)
        self.worker = worker_name()
        processing = settings.processing
        self.pool: ParserPool | None = None
        reader: Reader = inline_reader(limits)
        if not inline:
            self.pool = ParserPool(processing.workers, processing.parse_timeout_s, processing.parse_memory_mb, limits)
            reader = self.pool.submit
        self._decided = threading.Event()
        self._arrived = threading.Event()
        self._stop = threading.Event()
        self.timings = StageTimings()
        self.processor = Processor(
            settings,
            self.store,
            reader,
            self.templates,
            self.review,
            self.worker,
            on_decided=lambda _result: self.wake_sender(),
            timings=self.timings,
            # ahead of claims only where this worker alone claims: elsewhere another might read them again
            read_ahead_max=READ_AHEAD_MAX if self.pool is not None and not self.store.concurrent else 0,
        )
        # one access token per refresh token for the intake threads and the sender together
        self.credentials = Credentials(settings, record_token_states(self.store))
        self.sender = Sender(settings, self.store, self.worker, self.timings, self.credentials)
        # enough reads in flight to keep every worker busy while the oldest message is stored
        self.batch_size = max(2, (self.pool.workers if self.pool else 1) * 4)

    def close(self) -> None:
        self.sender.close()
        for lease in self.leases.values():
            lease.release()
        if self.pool is not None:
            self.pool.close()
        self.store.engine.dispose()

    def __enter__(self) -> Bot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- batch form ---------------------------------------------------------------------------

    def claim_expiry(self) -> timedelta:
        """How old a claim must be before its worker is taken for dead.

        A living worker holds a claim while the messages ahead of it in its read window are parsed
        (each within the parse timeout, ``pool.workers`` at a time) and then while it is decided;
        the extra minute covers deciding and the clocks of different machines.
        """
        processing = self.settings.processing
        rounds = self.batch_size // (self.pool.workers if self.pool else 1) + 1
        return timedelta(seconds=processing.parse_timeout_s * rounds + 60)

    def release_claims(self) -> None:
        """Take back work a stopped worker had claimed (all of it when nobody else can hold any)."""
        stale = self.claim_expiry() if self.store.concurrent else None
        released = self.store.to_decide.release_stale_claims(stale)
        if released:
            log.info("took back %d message(s) an interrupted run had started", released)

    def poll_mailbox(self, box: MailboxSettings) -> PollResult:
        try:
            with MailboxClient(box, self.credentials.of(box)) as client, self.timings.stage("fetch"):
                result = poll_folder(self.settings, box, client, self.store, self._recorded)
        except Exception as exc:
            self.note_poll_failure(box, exc)
            raise
        self.store.intake.note_poll(box.name, box.folder, None)
        return result

    def _recorded(self, pk: int) -> None:
        self.processor.read_ahead(pk)
        self._arrived.set()

    def note_poll_failure(self, box: MailboxSettings, exc: Exception) -> None:
        """Record the failure for ``status``; the database may be what failed, and intake must go on."""
        try:
            self.store.intake.note_poll(box.name, box.folder, str(exc))
        except Exception as unrecorded:
            log.warning(
                "mailbox %s: could not record the failure: %s", box.name, unrecorded, extra={"mailbox": box.name}
            )

    def poll_all(self, summary: RunSummary) -> None:
        for box in self.settings.mailbox:
            lease = self.leases[box.name]
            if not lease.try_acquire():
                log.info("mailbox %s is polled by another worker", box.name, extra={"mailbox": box.name})
                continue
            try:
                summary.polled.append(self.poll_mailbox(box))
            except Exception as exc:
                message = failure_text(box, exc)
                log.error("%s", message, extra={"mailbox": box.name})
                summary.errors.append(message)
            finally:
                lease.release()

    def process(self) -> list[Processed]:
        try:
            done = self.processor.run_pending(self.batch_size)
        except Exception:
            self.give_back(lambda: self.store.to_decide.release_claims_of(self.worker), "message(s)")
            raise
        self.file_for_review([item for item in done if item.in_review])
        return done

    def file_for_review(self, items: Sequence[Processed]) -> None:
        """Move the originals of new review items to ``[queue] imap_folder``, for admins in a mail client.

        A courtesy beside the queue folder: a failure is logged and changes nothing else.
        """
        target = self.settings.queue.imap_folder
        if not target or not items:
            return
        by_mailbox: dict[str, list[str]] = {}
        with self.store.sessions() as session:
            for item in items:
                message = session.get(Message, item.message_pk)
                if message is not None and message.message_id:
                    by_mailbox.setdefault(message.mailbox, []).append(message.message_id)
        known = {box.name for box in self.settings.mailbox}
        for name, message_ids in by_mailbox.items():
            if name not in known:
                continue  # imported mail has no server copy
            box = self.settings.mailbox_by_name(name)
            folders = [f for f in (box.folder, box.processed_folder) if f]
            try:
                with MailboxClient(box, self.credentials.of(box)) as client:
                    for message_id in message_ids:
                        if not client.move_message_id(folders, message_id, target):
                            log.info("%s is no longer in %s", message_id, ", ".join(folders), extra={"mailbox": name})
            except Exception as exc:
                log.warning("could not move review items to %s in %s: %s", target, name, exc, extra={"mailbox": name})

    def send(self) -> list[SendResult]:
        try:
            return self.sender.flush(keep_connections=True)
        except Exception:
            self.give_back(self.sender.give_back, "answer(s)")
            raise

    def give_back(self, release: Callable[[], int], what: str) -> None:
        """Return what this worker claimed in a round that failed, for the next round or run to take up.

        Left alone, the claims would wait for their expiry on PostgreSQL (another worker cannot
        tell a failed round from a slow one), and later messages would be decided before them.
        The database may be what failed: keep trying for a while, as a restart takes seconds.
        """
        deadline = time.monotonic() + GIVE_BACK_WITHIN_S
        while True:
            try:
                released = release()
            except Exception as exc:
                if time.monotonic() >= deadline or self._stop.is_set():
                    log.warning("could not give back the %s this worker claimed (%s): they wait for expiry", what, exc)
                    return
                self._stop.wait(1.0)
                continue
            if released:
                log.info("gave back %d %s this worker had claimed", released, what)
            return

    def run_once(self) -> RunSummary:
        """Read every mailbox, then decide everything while answers go out as soon as they are decided.

        Intake finishes before deciding starts, so a run decides its messages in arrival order even
        when a server's UIDs do not follow arrival.
        """
        summary = RunSummary()
        self.release_claims()
        self.poll_all(summary)
        deciding = threading.Event()
        deciding.set()
        failures: list[BaseException] = []

        def send_while_deciding() -> None:
            try:
                while True:
                    finished = not deciding.is_set()
                    summary.sent.extend(self.send())
                    if finished:
                        return
                    self._decided.wait(1.0)
                    self._decided.clear()
            except BaseException as exc:
                failures.append(exc)

        sender = threading.Thread(target=send_while_deciding, name="send-once")
        sender.start()
        try:
            summary.processed = self.process()
        finally:
            deciding.clear()
            self._decided.set()
            sender.join()
        if failures:
            raise failures[0]
        return summary

    # --- long-running form --------------------------------------------------------------------

    def wake_sender(self) -> None:
        self._decided.set()

    def stop(self) -> None:
        self._stop.set()
        self._arrived.set()
        self._decided.set()

    def run_forever(self, extra_jobs: Sequence[Callable[[threading.Event], None]] = ()) -> None:
        self.release_claims()
        threads = [
            threading.Thread(target=self._intake_loop, args=(box,), name=f"intake-{box.name}", daemon=True)
            for box in self.settings.mailbox
        ]
        threads.append(threading.Thread(target=self._process_loop, name="process", daemon=True))
        threads.append(threading.Thread(target=self._send_loop, name="send", daemon=True))
        threads.extend(threading.Thread(target=job, args=(self._stop,), daemon=True) for job in extra_jobs)
        for thread in threads:
            thread.start()
        log.info("running: %d mailbox(es), worker %s", len(self.settings.mailbox), self.worker)
        self._stop.wait()
        for thread in threads:
            thread.join(timeout=60)
        log.info("stopped cleanly")

    def _intake_loop(self, box: MailboxSettings) -> None:
        lease = self.leases[box.name]
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if not lease.try_acquire():
                    # another worker polls this mailbox; take over when it stops
                    self._stop.wait(box.poll_interval_s)
                    continue
                with MailboxClient(box, self.credentials.of(box)) as client:
                    while not self._stop.is_set() and lease.held():
                        with self.timings.stage("fetch"):
                            poll_folder(self.settings, box, client, self.store, self._recorded)
                        self.store.intake.note_poll(box.name, box.folder, None)
                        backoff = 1.0
                        if box.idle and client.supports_idle:
                            # short IDLE rounds so a stop request is honoured within seconds
                            deadline = time.monotonic() + box.poll_interval_s
                            while not self._stop.is_set() and time.monotonic() < deadline:
                                if client.idle_until_news(min(5.0, box.poll_interval_s)):
                                    break
                        else:
                            self._stop.wait(box.poll_interval_s)
            except Exception as exc:
                self.note_poll_failure(box, exc)
                log.error("%s; retrying in %.0f s", failure_text(box, exc), backoff, extra={"mailbox": box.name})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        lease.release()

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            self._arrived.wait(5.0)
            self._arrived.clear()
            try:
                if self.store.concurrent:
                    # a worker that died elsewhere leaves its claims behind; someone must take them up
                    self.release_claims()
                self.process()
            except Exception:
                log.exception("processing round failed; trying again")
                self._stop.wait(5.0)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._decided.wait(30.0)
            self._decided.clear()
            try:
                self.send()
            except Exception:
                log.exception("sending round failed; trying again")
                self._stop.wait(5.0)
