"""Reading: handing archived messages to the parser pool, ahead of their turn where it pays.

Reading (the slow, risky part) runs in the parser pool, several messages at once, while deciding
goes on in arrival order (``mailbot.pipeline``). A message the envelope-only rules already decide
(a machine's mail) is read from its header block here and never reaches the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from mailbot.config import CallSettings, Settings
from mailbot.decide import envelope_verdict
from mailbot.decision import CallRules
from mailbot.metrics import StageTimings
from mailbot.routing import read_for_calls, sharing_calls
from parsers.headers import read_headers
from parsers.limits import MIB, Limits
from parsers.message import too_large
from parsers.model import Envelope, Submission
from parsers.spec import FormSpec
from storage import Storage
from storage.decisions import ArchivedCopy, archived_copy

# reads the archived message at a path (in a worker process, or in this one)
Reader = Callable[[Path, FormSpec], "Future[Submission]"]
# what deciding waits for: the reading under way, or why it could not even start
Reading = Future[Submission] | BaseException

# readings started before their messages are claimed (each a few kilobytes once read)
READ_AHEAD_MAX = 512


def limits_of(settings: Settings) -> Limits:
    return replace(Limits(), max_message_bytes=settings.processing.max_message_mb * MIB)


class ReadingsInFlight:
    """The readings under way, by message row: started when a message is claimed, or earlier.

    Filled by intake's callback and by the deciding loop, from two threads in a long run (single
    dict operations only).
    """

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        reader: Reader,
        rules: dict[str, CallRules],
        timings: StageTimings,
        read_ahead_max: int = 0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reader = reader
        self.rules = rules
        self.timings = timings
        self.read_ahead_max = read_ahead_max
        self.limits = limits_of(settings)
        self._ahead: dict[int, Reading] = {}

    def read_ahead(self, pk: int, envelope: Envelope | None = None, copy: ArchivedCopy | None = None) -> None:
        """Start reading a message that intake has just archived, before it is claimed.

        A batch run decides only after its whole intake (so decisions follow arrival order), but
        reading does not depend on order: the pool reads while intake goes on instead of idling.
        Bounded (``read_ahead_max``), so a large backlog does not pile up readings in memory.
        ``envelope`` and ``copy``: the message's header section and row as intake read and wrote
        them, so neither is read again.
        """
        if len(self._ahead) < self.read_ahead_max:
            self._ahead[pk] = self.begin(pk, envelope, copy)

    def read_further(self) -> None:
        """Keep the pool reading the messages next in line while earlier ones are decided.

        Topped up in steps of half the bound, so the look-up runs once per few hundred messages.
        """
        if not self.read_ahead_max or len(self._ahead) > self.read_ahead_max // 2:
            return
        for pk in self.store.to_decide.next_in_line(self.read_ahead_max):
            if pk not in self._ahead:
                self._ahead[pk] = self.begin(pk)

    def drop_unclaimed(self) -> None:
        """At the end of a round, nothing was left to claim: what is still here arrived meanwhile
        (read again when claimed) or was taken up otherwise (an admin's action, another process)."""
        dropped = list(self._ahead.values())
        self._ahead.clear()
        for reading in dropped:
            if isinstance(reading, Future):
                reading.cancel()  # not read at all if the pool has not started it

    def take(self, pk: int) -> Reading:
        """The reading of a claimed message: the one started ahead, or one started now."""
        started = self._ahead.pop(pk, None)
        return self.begin(pk) if started is None else started

    def begin(self, pk: int, envelope: Envelope | None = None, copy: ArchivedCopy | None = None) -> Reading:
        try:
            with self.timings.stage("parse", count=0):
                return self.start_reading(pk, envelope=envelope, copy=copy)
        except Exception as exc:  # the archive copy is missing or unreadable
            return exc

    def start_reading(
        self, pk: int, call_id: str | None = None, envelope: Envelope | None = None, copy: ArchivedCopy | None = None
    ) -> Future[Submission]:
        """Have the archived message ``pk`` read (in the pool, or here when reading inline), as the form
        of ``call_id`` when given, else of its call or (at a shared address) of each call there.

        A message the envelope-only rules already decide (a machine's) is read from its header block
        (or ``envelope``, that block as intake read it) here and never reaches the pool
        (mailbot.rules.ENVELOPE_RULES). ``copy``: the row as intake recorded it, if it says.
        """
        if copy is None:
            with self.store.sessions() as session:
                copy = archived_copy(session, pk)
        recorded_call, sha, size = copy
        if size > self.limits.max_message_bytes:
            # refused unread: neither this process nor a worker holds a message of that size
            refused: Future[Submission] = Future()
            refused.set_result(too_large(self.store.archive.head(sha), size, self.limits))
            return refused
        original = self.store.archive.path_for(sha)
        if not original.is_file():
            raise FileNotFoundError(f"the archived message {sha} is missing")
        if call_id is not None:
            return read_for_calls(self.reader, original, [self.settings.call_by_id(call_id)])
        call = self.settings.call_by_id(recorded_call or self.settings.call[0].id)
        candidates = sharing_calls(self.settings, call.id)
        if len(candidates) > 1:
            return read_for_calls(self.reader, original, candidates)
        return self._decided_by_headers(sha, call, envelope) or self.reader(original, call.form_spec)

    def _decided_by_headers(
        self, sha: str, call: CallSettings, envelope: Envelope | None = None
    ) -> Future[Submission] | None:
        """The message as its header block alone, when an envelope-only rule already decides it (a
        machine's mail): its attachments are never read, and deciding gives what the full reading would.

        Not at an address several calls share (the caller reads those in full): there the form read
        chooses the call.
        """
        if envelope is None:
            envelope = read_headers(self.store.archive.head(sha))
        if envelope_verdict(envelope, self.rules[call.id]) is None:
            return None
        note = "decided on the header block alone: the attachments were not read"
        decided: Future[Submission] = Future()
        decided.set_result(Submission(envelope, diagnostics=(note,)))
        return decided
