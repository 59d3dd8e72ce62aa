"""Sending as a runner: every due answer, notice and digest of the outbox, woken by each decision."""

from __future__ import annotations

import threading

from mailbot.runners.base import Backoff, Runner, Stage
from mailbot.runners.claims import give_back
from mailbot.runners.drivers import RunSummary
from mailbot.sender import Sender, SendResult

# with nothing decided meanwhile, the outbox is still looked at this often (retries come due by the clock)
SENDING_INTERVAL_S = 30.0
SENDING_BACKOFF = (5.0, 5.0)


class SendingRunner(Runner):
    def __init__(self, sender: Sender, stopping: threading.Event) -> None:
        super().__init__("sending", Stage.SENDING, Backoff(*SENDING_BACKOFF), stopping, SENDING_INTERVAL_S)
        self.sender = sender
        self.last: list[SendResult] = []

    def send(self) -> list[SendResult]:
        """Send what is due; on a failure give back the answers this round had claimed."""
        try:
            return self.sender.flush(keep_connections=True)
        except Exception:
            give_back(self.sender.give_back, "answer(s)", self.stopping)
            raise

    def round(self) -> bool:
        self.last = []
        self.last = self.send()
        return bool(self.last)

    def report(self, summary: RunSummary) -> None:
        summary.sent.extend(self.last)
