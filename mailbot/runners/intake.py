"""Intake of one mailbox as a runner: hold its lease, poll, then IDLE (or wait) until the next poll."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mailbot.config import Settings
from mailbot.config_accounts import MailboxSettings
from mailbot.coordination import MailboxLease
from mailbot.imap import MailboxClient, MailboxUnavailable
from mailbot.intake import OnRecorded, PollResult, poll_folder
from mailbot.metrics import StageTimings
from mailbot.oauth import Credentials
from mailbot.runners.base import Backoff, Runner, Stage
from mailbot.runners.drivers import RunSummary
from storage import Storage

log = logging.getLogger(__name__)

# a server refusing us is retried after 1 s, then 2, 4 … up to five minutes
INTAKE_BACKOFF = (1.0, 300.0)
# IDLE is entered for at most this long at a time, so a stop request is honoured within seconds
IDLE_ROUND_S = 5.0


class IntakeRunner(Runner):
    """Brings one mailbox's new mail into the archive and the database (``mailbot.intake.poll_folder``).

    Under ``run`` the runner keeps its connection between rounds and waits in IDLE where the server
    has it; several workers of one database poll a mailbox only while holding its lease.
    """

    log_traceback = False

    def __init__(
        self,
        settings: Settings,
        box: MailboxSettings,
        store: Storage,
        credentials: Credentials,
        timings: StageTimings,
        on_recorded: OnRecorded,
        stopping: threading.Event,
    ) -> None:
        super().__init__(f"intake-{box.name}", Stage.INTAKE, Backoff(*INTAKE_BACKOFF), stopping, box.poll_interval_s)
        self.settings = settings
        self.box = box
        self.store = store
        self.credentials = credentials
        self.timings = timings
        self.on_recorded = on_recorded
        self.lease = MailboxLease(store.engine, box.name)
        self.client: MailboxClient | None = None
        self.last: PollResult | None = None
        self._polled_elsewhere = False

    def round(self) -> bool:
        self.last = None
        if not self.lease.try_acquire():
            self._disconnect()
            if not self._polled_elsewhere:  # said once, not at every interval while the other worker lives
                log.info("mailbox %s is polled by another worker", self.box.name, extra=self.log_fields())
            self._polled_elsewhere = True
            return False
        self._polled_elsewhere = False
        with self._noting_failure():
            if self.client is None:
                self.client = MailboxClient(self.box, self.credentials.of(self.box))
                self.client.connect()
            self.last = self._poll(self.client)
        return self.last.new > 0

    def poll_now(self) -> PollResult:
        """One poll on a connection of its own, lease or not (tests, and a look at one mailbox)."""
        with self._noting_failure(), MailboxClient(self.box, self.credentials.of(self.box)) as client:
            return self._poll(client)

    def _poll(self, client: MailboxClient) -> PollResult:
        with self.timings.stage("fetch"):
            result = poll_folder(self.settings, self.box, client, self.store, self.on_recorded)
        self.store.intake.note_poll(self.box.name, self.box.folder, None)
        return result

    def snooze(self, did_work: bool) -> None:
        """Poll again at once after new mail (more may have come meanwhile); else IDLE or wait an interval."""
        if did_work:
            return
        client = self.client
        if client is None or not self.box.idle:
            super().snooze(did_work)
            return
        with self._noting_failure():
            if not client.supports_idle:
                super().snooze(did_work)
                return
            deadline = time.monotonic() + self.interval_s
            while not self.stopping.is_set() and time.monotonic() < deadline:
                if client.idle_until_news(min(IDLE_ROUND_S, self.interval_s)):
                    return

    @contextmanager
    def _noting_failure(self) -> Iterator[None]:
        """On a failure, drop the connection and record the failure for ``status`` before it goes on up."""
        try:
            yield
        except Exception as exc:
            self._disconnect()
            self._note_poll_failure(exc)
            raise

    def _note_poll_failure(self, exc: Exception) -> None:
        """Record the failure for ``status``; the database may be what failed, and intake must go on."""
        try:
            self.store.intake.note_poll(self.box.name, self.box.folder, str(exc))
        except Exception as unrecorded:
            log.warning(
                "mailbox %s: could not record the failure: %s", self.box.name, unrecorded, extra=self.log_fields()
            )

    def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def report(self, summary: RunSummary) -> None:
        if self.last is not None:
            summary.polled.append(self.last)

    def failure_text(self, exc: Exception) -> str:
        # MailboxUnavailable names the mailbox already
        return str(exc) if isinstance(exc, MailboxUnavailable) else f"mailbox {self.box.name}: {exc}"

    def log_fields(self) -> dict[str, str]:
        return {"mailbox": self.box.name}

    def close(self) -> None:
        self._disconnect()
        self.lease.release()
        self._polled_elsewhere = False
