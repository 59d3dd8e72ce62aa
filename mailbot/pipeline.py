"""Processing: archived message → read → decide → store + outbox, one transaction per message.

Reading (the slow, risky part) runs in the parser pool, several messages at once; deciding runs in
arrival order, one call at a time, because a decision depends on the decisions before it. A
message whose processing fails goes to review with the error recorded; the ones behind it go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailbot.acknowledge import is_our_message_id
from mailbot.classify import referred_ids
from mailbot.clock import utcnow
from mailbot.config import CallSettings, Settings
from mailbot.decide import decide, envelope_verdict
from mailbot.decision import (
    ANSWERED,
    APPLICATION_OUTCOMES,
    CallRules,
    Outcome,
)
from mailbot.decision_rows import as_stored, decision_record, person_columns, store_application
from mailbot.effect_runner import EffectRunner
from mailbot.effects import add_review_effects
from mailbot.guard import IDENTITY_CONFLICT, conflict_diagnostics, identity_conflict
from mailbot.identity import Identity, identity_of
from mailbot.metrics import StageTimings
from mailbot.outbox import Outbox
from mailbot.priors import load_priors
from mailbot.review import ReviewQueue
from mailbot.routing import read_for_calls, sharing_calls
from parsers.headers import read_headers
from parsers.limits import MIB, Limits
from parsers.message import too_large
from parsers.model import Envelope, Submission, to_jsonable
from parsers.spec import FormSpec
from storage import Storage
from storage.db import defer_durability
from storage.decisions import (
    MessageFacts,
    archived_copy,
    has_attachments,
    is_our_answer,
    lock_call,
    message_facts,
    next_reference_number,
    record_bounces,
    store_attachments,
    write_decision,
)
from storage.effects import DueEffect
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from storage.models import (
    Message,
    MessageState,
)
from templates import TemplateSet

log = logging.getLogger(__name__)

# reads the archived message at a path (in a worker process, or in this one)
Reader = Callable[[Path, FormSpec], "Future[Submission]"]


class StateChanged(Exception):
    """The message is no longer in the state this step expected (someone else handled it)."""


class DecideOverrun(Exception):
    """Deciding a message took longer than its budget ([security] decide_budget_s)."""


class Deferred(Exception):
    """An earlier message of the same call is still being read by another worker: decide it first."""


ACTOR = "pipeline"
# readings started before their messages are claimed (each a few kilobytes once read)
READ_AHEAD_MAX = 512


@dataclass(frozen=True)
class Processed:
    message_pk: int
    message_key: str
    outcome: str
    reference: str | None
    acknowledged: bool
    in_review: bool = False


def limits_of(settings: Settings) -> Limits:
    return replace(Limits(), max_message_bytes=settings.processing.max_message_mb * MIB)


def format_reference(call: CallSettings, number: int) -> str:
    return f"{call.reference_prefix}-{number:04d}"


def _log_extra(message: Message | MessageFacts, reference: str | None = None) -> dict[str, Any]:
    return {"message_id": message.message_id or message.message_key, "reference": reference}


class Processor:
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
        self.settings = settings
        self.store = store
        self.reader = reader
        self.templates = templates
        # the review folder is written by a step after the deciding commit, never inside it
        self.effects = EffectRunner(settings, store, worker, review)
        self.outbox = Outbox(settings, templates)
        self.worker = worker
        self.on_decided = on_decided
        self.timings = timings or StageTimings()
        self._deferred = False
        # readings of messages not yet claimed, by row: filled by intake's callback and by
        # run_pending, from two threads in a long run (single dict operations only)
        self.read_ahead_max = read_ahead_max
        self._read_ahead: dict[int, Future[Submission] | BaseException] = {}
        self.limits = limits_of(settings)
        # identifying an applicant runs here, so that a message over its time budget can be given up on;
        # a second thread keeps the next message going while an abandoned one finishes
        self._identifying = ThreadPoolExecutor(max_workers=2, thread_name_prefix="identify")
        own = settings.own_addresses
        self.rules = {call.id: CallRules.from_settings(call, own) for call in settings.call}

    # --- the loop ---------------------------------------------------------------------------

    def run_pending(self, batch_size: int = 8, limit: int | None = None) -> list[Processed]:
        """Process received messages until none are left (or ``limit`` were done).

        Up to ``batch_size`` messages are being read in the pool while the oldest is decided, so
        reading and storing overlap; decisions still happen strictly in claim (arrival) order.
        """
        done: list[Processed] = []
        window: deque[tuple[int, Future[Submission] | BaseException]] = deque()
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
                window.extend((pk, self._reading(pk)) for pk in claimed)
                if more:
                    self._read_further()
            if not window:
                self._drop_read_ahead()
                return done
            pk, pending = window.popleft()
            result = self._finish(pk, pending)
            if result is not None:
                done.append(result)

    def read_ahead(self, pk: int) -> None:
        """Start reading a message that intake has just archived, before it is claimed.

        A batch run decides only after its whole intake (so decisions follow arrival order), but
        reading does not depend on order: the pool reads while intake goes on instead of idling.
        Bounded (``read_ahead_max``), so a large backlog does not pile up readings in memory.
        """
        if len(self._read_ahead) < self.read_ahead_max:
            self._read_ahead[pk] = self._start(pk)

    def _read_further(self) -> None:
        """Keep the pool reading the messages next in line while earlier ones are decided.

        Topped up in steps of half the bound, so the look-up runs once per few hundred messages.
        """
        if not self.read_ahead_max or len(self._read_ahead) > self.read_ahead_max // 2:
            return
        for pk in self.store.to_decide.next_in_line(self.read_ahead_max):
            if pk not in self._read_ahead:
                self._read_ahead[pk] = self._start(pk)

    def _drop_read_ahead(self) -> None:
        """At the end of a round, nothing was left to claim: what is still here arrived meanwhile
        (read again when claimed) or was taken up otherwise (an admin's action, another process)."""
        dropped = list(self._read_ahead.values())
        self._read_ahead.clear()
        for pending in dropped:
            if isinstance(pending, Future):
                pending.cancel()  # not read at all if the pool has not started it

    def _reading(self, pk: int) -> Future[Submission] | BaseException:
        started = self._read_ahead.pop(pk, None)
        return self._start(pk) if started is None else started

    def _start(self, pk: int) -> Future[Submission] | BaseException:
        try:
            with self.timings.stage("parse", count=0):
                return self.start_reading(pk)
        except Exception as exc:  # the archive copy is missing or unreadable
            return exc

    def _finish(self, pk: int, pending: Future[Submission] | BaseException) -> Processed | None:
        try:
            if isinstance(pending, BaseException):
                raise pending
            with self.timings.stage("parse"):
                submission = pending.result()
            with self.timings.stage("store"):
                return self.decide_and_store(pk, submission)
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
            return self.send_to_review(pk, exc)

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
            submission = self.start_reading(pk, call_id).result()
        return self.decide_and_store(pk, submission, expect=MessageState.REVIEW, actor=actor, confirmed=confirmed)

    def start_reading(self, pk: int, call_id: str | None = None) -> Future[Submission]:
        """Have the archived message ``pk`` read (in the pool, or here when reading inline), as the form
        of ``call_id`` when given, else of its call or (at a shared address) of each call there.

        A message the envelope-only rules already decide (a machine's) is read from its header block
        here and never reaches the pool (mailbot.rules.ENVELOPE_RULES)."""
        with self.store.sessions() as session:
            recorded_call, sha, size = archived_copy(session, pk)
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
        return self._decided_by_headers(sha, call) or self.reader(original, call.form_spec)

    def _decided_by_headers(self, sha: str, call: CallSettings) -> Future[Submission] | None:
        """The message as its header block alone, when an envelope-only rule already decides it (a
        machine's mail): its attachments are never read, and deciding gives what the full reading would.

        Not at an address several calls share (the caller reads those in full): there the form read
        chooses the call.
        """
        envelope = read_headers(self.store.archive.head(sha))
        if envelope_verdict(envelope, self.rules[call.id]) is None:
            return None
        note = "decided on the header block alone: the attachments were not read"
        decided: Future[Submission] = Future()
        decided.set_result(Submission(envelope, diagnostics=(note,)))
        return decided

    # --- deciding and storing ----------------------------------------------------------------

    def decide_and_store(
        self,
        pk: int,
        submission: Submission,
        expect: MessageState = MessageState.PROCESSING,
        actor: str = ACTOR,
        confirmed: bool = False,
    ) -> Processed:
        """Decide ``pk`` and store everything that follows from it in one transaction.

        ``confirmed``: an admin confirmed that the sender may change the application the form names
        (``queue confirm``), so an identity conflict is not held again.

        ``expect`` is the state the message must still be in (another worker, or an admin's
        concurrent action, may have finished it meanwhile); if it is not, nothing changes.
        The rows are written as table statements, and only once the decision is made: on SQLite
        the first write makes the other threads wait for the commit, and the ORM's bookkeeping
        for a handful of rows cost more than the rest of the decision.
        """
        review_folder: DueEffect | None = None
        with self.store.sessions() as session, session.begin():
            # nothing leaves the machine on this commit: the answer goes out only after the sender's
            # hand-over mark, a durable commit that takes this one to the disk with it
            defer_durability(session)
            message = message_facts(session, pk)
            if message.state != expect:
                raise StateChanged(f"message {message.message_key} is {message.state}, not {expect}")
            # at an address several calls share, the form read decides the call (mailbot.routing)
            call = self.settings.call_by_id(submission.routed_call or message.call_id or self.settings.call[0].id)
            lock_call(session, call.id)
            if (
                expect == MessageState.PROCESSING
                and self.store.concurrent
                and self.store.to_decide.earlier_undecided(session, call.id, message.arrival, pk)
            ):
                # decisions depend on the ones before them: another worker's earlier message goes first
                raise Deferred(f"{message.message_key} waits for an earlier message of {call.id}")
            form = submission.form
            rules = self.rules[call.id]
            identity = self._identify(submission, rules) if form else None
            probe = as_stored(identity) if identity else None
            priors = load_priors(session, call.id, message.arrival, pk, probe, form.sha256 if form else None)
            ours = self.ours_among(session, submission.envelope)
            decide_started = time.perf_counter()
            decision = decide(submission, message.message_key, message.arrival, rules, priors, ours, identity)
            self.timings.add("decide", time.perf_counter() - decide_started)
            conflict = None if confirmed else identity_conflict(session, decision, priors, submission.envelope)
            if conflict is not None:
                # recorded as what it is, but the application stays as it was until an admin confirms
                decision = replace(
                    decision,
                    flags=(*decision.flags, IDENTITY_CONFLICT),
                    explanation=f"{decision.explanation} Held: it came from {conflict.sender}, an address "
                    f"not on application {conflict.application_key}.",
                )
            held = conflict is not None
            state = MessageState.REVIEW if decision.outcome == Outcome.UNREADABLE or held else MessageState.DONE
            reason = submission.unreadable.reason if submission.unreadable else None
            # a retry is counted only if it commits
            attempts = message.attempts + 1 if expect == MessageState.REVIEW else message.attempts
            changes: dict[str, Any] = {
                "call_id": call.id,
                "state": state,
                "claimed_by": None,
                "attempts": attempts,
                "outcome": decision.outcome.value,
                "reason": reason,
                "decision": decision_record(decision),
                "reading": to_jsonable(submission),
                "supersedes_key": decision.supersedes,
                "duplicate_of_key": decision.duplicate_of,
                "decided_at": utcnow(),
                "error": None,
                **person_columns(decision, submission),
            }
            if (decision.outcome in APPLICATION_OUTCOMES or decision.outcome == Outcome.LATE) and not held:
                application_id = store_application(session, pk, message.message_key, call.id, decision, submission)
                if application_id is not None:
                    changes["application_id"] = application_id
            # a first decision has stored nothing yet; a retry keeps what the first one stored
            if expect == MessageState.PROCESSING or not has_attachments(session, pk):
                store_attachments(session, pk, submission.attachments)
            record_bounces(session, submission.envelope.bounced_message_ids, ACTOR)
            reference = message.reference  # a retried message keeps the number it was given
            if reference is None and decision.outcome != Outcome.IGNORED:
                reference = format_reference(call, next_reference_number(session, call.id))
            changes["reference"] = reference
            write_decision(session, pk, changes)
            acknowledged = False
            # a retry that ends where it was has nothing new to tell the applicant
            repeated = expect == MessageState.REVIEW and message.outcome == decision.outcome.value and not confirmed
            if decision.outcome in ANSWERED and not repeated:
                answered = replace(message, attempts=attempts, reference=reference)
                acknowledged = self.outbox.answer(session, answered, call, decision, submission, conflict)
            add_event(
                session,
                EventKind.DECIDED,
                actor,
                pk,
                outcome=decision.outcome.value,
                rule=decision.rule,
                reference=reference,
                explanation=decision.explanation,
                rule_hits=list(decision.rule_hits),
                rule_misses=list(decision.rule_misses),
            )
            if state == MessageState.REVIEW:
                stored = session.get_one(Message, pk)
                diagnostics = {} if conflict is None else conflict_diagnostics(session, conflict)
                if submission.unreadable is not None:  # e.g. the calls an ambiguous form could belong to
                    diagnostics["detail"] = submission.unreadable.detail
                review_folder = add_review_effects(
                    session,
                    self.settings,
                    stored,
                    self.worker,
                    IDENTITY_CONFLICT if held else reason or decision.rule,
                    decision.explanation,
                    **diagnostics,
                )
            result = Processed(
                pk,
                message.message_key,
                decision.outcome.value,
                reference,
                acknowledged,
                in_review=state == MessageState.REVIEW,
            )
            log.info(
                "%s → %s (%s)",
                message.message_key,
                decision.outcome.value,
                decision.rule,
                extra=_log_extra(message, reference),
            )
            failpoint("decide.commit")
        if review_folder is not None:
            self.effects.run_claimed([review_folder])
        if self.on_decided is not None:
            self.on_decided(result)
        return result

    def _identify(self, submission: Submission, rules: CallRules) -> Identity:
        """Who the form names, computed once, within the time budget: a message that overruns it goes to
        review (the computation is abandoned) rather than holding up every message behind it."""
        assert submission.form is not None
        values = dict(submission.form.values())
        pending = self._identifying.submit(
            identity_of, values, submission.envelope.from_addr, rules.institution_aliases
        )
        budget = self.settings.security.decide_budget_s
        try:
            return pending.result(timeout=budget)
        except FutureTimeout:
            pending.cancel()
            raise DecideOverrun(f"identifying the applicant took over {budget:g} s") from None

    def ours_among(self, session: Session, envelope: Envelope) -> frozenset[str]:
        """Which of the Message-IDs ``envelope`` refers to the fund sent: the fact decide() needs, looked up."""
        return frozenset(mid for mid in referred_ids(envelope) if self._is_ours(session, mid))

    def _is_ours(self, session: Session, message_id: str) -> bool:
        if is_our_message_id(message_id, self.settings.call):
            return True
        return is_our_answer(session, message_id)

    # --- failures -----------------------------------------------------------------------------

    def send_to_review(self, pk: int, exc: BaseException) -> Processed:
        detail = "".join(traceback.format_exception(exc))
        overran = isinstance(exc, DecideOverrun)
        reason = "timeout" if overran else "internal-error"
        with self.store.sessions() as session, session.begin():
            message = session.get_one(Message, pk)
            log.error("processing failed, sent to review: %s", exc, extra=_log_extra(message))
            message.state = MessageState.REVIEW
            message.outcome = Outcome.UNREADABLE.value
            message.reason = reason
            message.error = detail[-20000:]
            message.claimed_by = None
            message.decided_at = utcnow()
            add_event(session, EventKind.FAILED, ACTOR, pk, error=f"{exc.__class__.__name__}: {exc}")
            review_folder = add_review_effects(
                session,
                self.settings,
                message,
                self.worker,
                reason,
                f"deciding took too long ({exc}); a person must look"
                if overran
                else f"processing stopped with an error ({exc.__class__.__name__}); a person must look",
            )
            failpoint("review.commit")
            result = Processed(
                pk, message.message_key, Outcome.UNREADABLE.value, message.reference, False, in_review=True
            )
        self.effects.run_claimed([review_folder])
        return result
