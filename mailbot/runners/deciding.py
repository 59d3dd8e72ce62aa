"""Deciding as a runner: every received message, in arrival order, woken by each archived one."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from mailbot.config import Settings
from mailbot.deciding import Processed
from mailbot.pipeline import Pipeline
from mailbot.runners.base import Backoff, Runner, Stage
from mailbot.runners.claims import give_back
from mailbot.runners.drivers import RunSummary
from storage import Storage

log = logging.getLogger(__name__)

# with nothing archived meanwhile, received messages are still looked for this often (another worker's, say)
DECIDING_INTERVAL_S = 5.0
DECIDING_BACKOFF = (5.0, 5.0)


class DecidingRunner(Runner):
    """Decides received messages through ``Pipeline.decide_received``, ``batch_size`` read ahead at a time.

    ``parsers_at_once`` is how many messages the parser pool reads side by side (1 when reading
    inline); with ``batch_size`` it says how long a living worker may hold a claim.
    """

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        pipeline: Pipeline,
        worker: str,
        parsers_at_once: int,
        stopping: threading.Event,
        follow_up: threading.Event,
    ) -> None:
        super().__init__("deciding", Stage.DECIDING, Backoff(*DECIDING_BACKOFF), stopping, DECIDING_INTERVAL_S)
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.worker = worker
        self.parsers_at_once = parsers_at_once
        # set after a round that decided something: the effects runner's wake-up
        self.follow_up = follow_up
        # enough reads in flight to keep every parser busy while the oldest message is stored
        self.batch_size = max(2, parsers_at_once * 4)
        self.last: list[Processed] = []

    def claim_expiry(self) -> timedelta:
        """How old a claim must be before its worker is taken for dead.

        A living worker holds a claim while the messages ahead of it in its read window are parsed
        (each within the parse timeout, ``parsers_at_once`` at a time) and then while it is decided;
        the margin (``[processing] claim_margin_s``, a minute) covers deciding and the clocks of
        different machines.
        """
        rounds = self.batch_size // self.parsers_at_once + 1
        processing = self.settings.processing
        return timedelta(seconds=processing.parse_timeout_s * rounds + processing.claim_margin_s)

    def release_claims(self) -> None:
        """Take back work a stopped worker had claimed (all of it when nobody else can hold any)."""
        stale = self.claim_expiry() if self.store.concurrent else None
        released = self.store.to_decide.release_stale_claims(stale)
        if released:
            log.info("took back %d message(s) an interrupted run had started", released)

    def prepare(self) -> None:
        self.release_claims()

    def round(self) -> bool:
        self.last = []
        if self.store.concurrent:
            # a worker that died elsewhere leaves its claims behind; someone must take them up
            self.release_claims()
        self.last = self.decide()
        return bool(self.last)

    def decide(self) -> list[Processed]:
        """Decide every received message; on a failure give back the messages this round had claimed."""
        try:
            done = self.pipeline.decide_received(self.batch_size)
        except Exception:
            give_back(lambda: self.store.to_decide.release_claims_of(self.worker), "message(s)", self.stopping)
            raise
        if done:
            self.follow_up.set()  # the effects runner: what the round's commits left to do (IMAP moves)
        return done

    def report(self, summary: RunSummary) -> None:
        summary.processed.extend(self.last)
