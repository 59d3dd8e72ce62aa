"""The daily digests as a runner: its round makes sure the schedule runs; APScheduler keeps the clock."""

from __future__ import annotations

import threading

from mailbot.runners.base import Backoff, Runner, Stage
from mailbot.scheduling import DigestScheduler

# the schedule runs on its own thread once started; the runner only wakes to stop it
DIGESTS_INTERVAL_S = 3600.0
DIGESTS_BACKOFF = (60.0, 3600.0)


class DigestRunner(Runner):
    """Starts the digest schedule (catching up on a digest missed while down) and stops it at shutdown."""

    def __init__(self, scheduler: DigestScheduler, stopping: threading.Event) -> None:
        super().__init__("digests", Stage.SCHEDULED, Backoff(*DIGESTS_BACKOFF), stopping, DIGESTS_INTERVAL_S)
        self.scheduler = scheduler
        self._started = False

    def round(self) -> bool:
        if self._started:
            return False
        self.scheduler.start()
        self._started = True
        return True

    def close(self) -> None:
        self.scheduler.shutdown()
        self._started = False
