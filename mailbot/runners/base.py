"""What every runner is: a name, a stage, one round, a wake-up and a backoff policy.

Learnt from GNU Mailman 3's runners: a runner does one bounded round of its job and then snoozes
until woken or its interval passes; what happens when a round fails (logging, waiting, trying
again) is not the runner's business but its supervisor's (``mailbot.runners.supervision``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailbot.runners.drivers import RunSummary


class Stage(Enum):
    """Where a runner stands in a single pass (``run --once``); ``run`` runs every stage side by side."""

    INTAKE = "intake"  # one round each, first of all; a failure is noted in the summary and intake goes on
    DECIDING = "deciding"  # one round, after all intake, while the sending runners go on beside it
    SENDING = "sending"  # rounds while deciding lasts (woken by each decision), then one last round
    FOLLOW_UP = "follow-up"  # one round after deciding and sending are over
    SCHEDULED = "scheduled"  # only in ``run``: works on a clock, not on what a pass brought in


@dataclass
class Backoff:
    """How long to wait after a failed round: ``first_s``, doubling up to ``cap_s``; reset by a good round."""

    first_s: float
    cap_s: float
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def after_failure(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.cap_s)
        return delay

    def after_success(self) -> None:
        self._next_s = self.first_s


class Runner:
    """One stage that runs by itself, a round at a time.

    ``stopping`` is the worker's stop request, shared by all its runners: a round that waits (for a
    database coming back, say) gives up when it is set.
    """

    # a failure worth its traceback in the log; intake's are the network's and read well as one line
    log_traceback = True

    def __init__(self, name: str, stage: Stage, backoff: Backoff, stopping: threading.Event, interval_s: float) -> None:
        self.name = name
        self.stage = stage
        self.backoff = backoff
        self.stopping = stopping
        self.interval_s = interval_s
        self.wake = threading.Event()

    def prepare(self) -> None:
        """Before either driver's first round (taking back what a stopped run left behind, say)."""

    def round(self) -> bool:
        """Do one round of the job; True if it did any work."""
        raise NotImplementedError

    def snooze(self, did_work: bool) -> None:
        """Wait for the next round: until woken, stopped, or ``interval_s`` has passed."""
        self.wake.wait(self.interval_s)
        self.wake.clear()

    def report(self, summary: RunSummary) -> None:
        """Add what the last round did to a single pass's summary."""

    def failure_text(self, exc: Exception) -> str:
        """A failed round as its log line says it."""
        return f"{self.name} round failed: {exc}"

    def log_fields(self) -> dict[str, str]:
        """Extra fields of this runner's log records (the JSON log's ``mailbox``, say)."""
        return {}

    def after_stop(self) -> None:
        """Finish up once no runner of the worker is mid-round: when ``run`` stops, and at the end of
        a single pass."""

    def close(self) -> None:
        """After the last round: let go of connections and leases."""
