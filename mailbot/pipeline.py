"""The deciding stage's loop: archived message → read → decide → store + outbox, in arrival order.

Reading (the slow, risky part) runs in the parser pool, several messages at once
(``mailbot.reading``); deciding runs in arrival order, one call at a time, because a decision
depends on the decisions before it (``mailbot.deciding``). ``Pipeline.decide_received`` keeps a window
of claimed messages being read while the oldest is decided, so the two overlap.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from sqlalchemy.exc import InterfaceError, OperationalError

from mailbot.config import Settings
from mailbot.deciding import ACTOR, Deferred, MessageDecider, Processed, StateChanged
from mailbot.metrics import StageTimings
from mailbot.reading import Reader, Reading, ReadingsInFlight
from mailbot.review import ReviewQueue
from parsers.model import Submission
from storage import Storage
from storage.models import MessageState
from templates import TemplateSet

log = logging.getLogger(__name__)


class Pipeline:
    """Reads claimed messages in the pool and decides them in claim (arrival) order."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        reader: Reader,
        templates: TemplateSet,
        review: ReviewQueue,
        worker: str,
        on_decided: Callable[[Processed], None] | None = None,
        timings: StageTimings | None = None,
        read_ahead_max: int = 0,
    ) -> None:
        self.store = store
        self.worker = worker
        self.timings = timings or StageTimings()
        self.decider = MessageDecider(settings, store, templates, review, worker, self.timings, on_decided)
        self.readings = ReadingsInFlight(settings, store, reader, self.decider.rules, self.timings, read_ahead_max)
        self._deferred = False

    def decide_received(self, batch_size: int = 8, limit: int | None = None) -> list[Processed]:
        """Decide received messages until none are left (or ``limit`` were done).

        Up to ``batch_size`` messages are being read in the pool while the oldest is decided, so
        reading and storing overlap; decisions still happen strictly in claim (arrival) order.
        """
        done: list[Processed] = []
        window: deque[tuple[int, Reading]] = deque()
        more = True
        self._deferred = False
        while True:
            more = more and not self._deferred  # after a deferral, let the other worker catch up first
            room = batch_size - len(window)
            if limit is not None:
                room = min(room, limit - len(done) - len(window))
            if more and room > 0 and len(window) <= batch_size // 2:
                claimed = self.store.to_decide.claim(self.worker, room)
                more = bool(claimed)
                window.extend((pk, self.readings.take(pk)) for pk in claimed)
                if more:
                    self.readings.read_further()
            if not window:
                self.readings.drop_unclaimed()
                return done
            pk, reading = window.popleft()
            result = self._decide_read(pk, reading)
            if result is not None:
                done.append(result)

    def _decide_read(self, pk: int, reading: Reading) -> Processed | None:
        """Wait for the reading of ``pk`` and decide it; None if it is no longer this worker's to decide."""
        try:
            if isinstance(reading, BaseException):
                raise reading
            with self.timings.stage("parse"):
                submission = reading.result()
            with self.timings.stage("store"):
                return self.decider.decide_and_store(pk, submission)
        except StateChanged as exc:
            log.warning("%s", exc)
            return None
        except Deferred as exc:
            log.debug("%s", exc)
            self.store.to_decide.unclaim(pk)
            self._deferred = True
            return None
        except (OperationalError, InterfaceError):
            # the database, not the message, failed (a restart, a lost connection, a long lock):
            # the round stops and the claim is given back, so the message is decided again later.
            # What the message itself causes (a value too long for its column) goes to review below.
            raise
        except Exception as exc:
            return self.decider.send_to_review(pk, exc)

    def reprocess(
        self,
        pk: int,
        submission: Submission | None = None,
        actor: str = ACTOR,
        confirmed: bool = False,
        call_id: str | None = None,
    ) -> Processed:
        """Decide a message in the review queue again (with today's readers, or with ``submission``).

        ``call_id`` is an admin's answer to an address several calls share: read it as that call's form.
        Nothing changes unless the whole decision commits: a failure leaves the item in the queue.
        ``confirmed``: an admin confirmed the sender of a form held as an identity conflict.
        """
        if submission is None:
            submission = self.readings.start_reading(pk, call_id).result()
        return self.decider.decide_and_store(
            pk, submission, expect=MessageState.REVIEW, actor=actor, confirmed=confirmed
        )
