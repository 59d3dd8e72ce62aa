"""Deciding one message: its facts, the rules, and everything that follows, in one transaction.

The transaction loads the message (still in the state the caller expects), runs the rules
(``mailbot.rules``), stores the decision, its application and attachments, queues its answer
through the outbox and adds the effects it implies (``mailbot.effects``); the review folder is
written after the commit, never inside it. A message whose deciding fails goes to review with the
error recorded; the ones behind it go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from mailbot.acknowledge import is_our_message_id
from mailbot.classify import referred_ids
from mailbot.clock import utcnow
from mailbot.config import CallSettings, Settings
from mailbot.decide import decide
from mailbot.decision import ANSWERED, APPLICATION_OUTCOMES, CallRules, Decision, Outcome
from mailbot.decision_rows import decision_record, person_columns, store_application
from mailbot.effect_runner import EffectRunner
from mailbot.effects import add_review_effects
from mailbot.guard import IDENTITY_CONFLICT, Conflict, conflict_diagnostics, identity_conflict
from mailbot.identity import Identity, identity_of
from mailbot.metrics import StageTimings
from mailbot.outbox import Outbox
from mailbot.priors import load_priors
from mailbot.review import ReviewQueue
from parsers.model import Envelope, Submission, to_jsonable
from storage import Storage
from storage.db import defer_durability
from storage.decisions import (
    MessageFacts,
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
from storage.models import Message, MessageState
from templates import TemplateSet

log = logging.getLogger(__name__)

ACTOR = "pipeline"


class StateChanged(Exception):
    """The message is no longer in the state this step expected (someone else handled it)."""


class DecideOverrun(Exception):
    """Deciding a message took longer than its budget ([security] decide_budget_s)."""


class Deferred(Exception):
    """An earlier message of the same call is still being read by another worker: decide it first."""


@dataclass(frozen=True)
class Processed:
    """What became of one message: its outcome and reference, whether it was answered or went to review."""

    message_pk: int
    message_key: str
    outcome: str
    reference: str | None
    acknowledged: bool
    in_review: bool = False


@dataclass(frozen=True)
class Verdict:
    """What deciding one message concluded, before it is stored."""

    decision: Decision
    conflict: Conflict | None  # the form would change an application its sender is not on record for
    state: MessageState
    attempts: int  # a retry is counted only if it commits
    reason: str | None  # why the form could not be read

    @property
    def held(self) -> bool:
        return self.conflict is not None


def format_reference(call: CallSettings, number: int) -> str:
    return f"{call.reference_prefix}-{number:04d}"


def log_fields(message: Message | MessageFacts, reference: str | None = None) -> dict[str, Any]:
    return {"message_id": message.message_id or message.message_key, "reference": reference}


class MessageDecider:
    """Decides one message at a time and stores what follows, each in a transaction of its own."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        templates: TemplateSet,
        review: ReviewQueue,
        worker: str,
        timings: StageTimings,
        on_decided: Callable[[Processed], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.timings = timings
        self.on_decided = on_decided
        # the review folder is written by a step after the deciding commit, never inside it
        self.effects = EffectRunner(settings, store, worker, review)
        self.outbox = Outbox(settings, templates)
        self.rules = {call.id: CallRules.from_settings(call, settings.own_addresses) for call in settings.call}
        # identifying an applicant runs here, so that a message over its time budget can be given up on;
        # a second thread keeps the next message going while an abandoned one finishes
        self._identifying = ThreadPoolExecutor(max_workers=2, thread_name_prefix="identify")

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
            message, call = self._message_and_call(session, pk, submission, expect)
            verdict = self._decide(session, message, call, submission, expect, confirmed)
            decision = verdict.decision
            reference = self._store(session, message, call, submission, verdict, expect)
            # a retry that ends where it was has nothing new to tell the applicant
            repeated = expect == MessageState.REVIEW and message.outcome == decision.outcome.value and not confirmed
            acknowledged = False
            if decision.outcome in ANSWERED and not repeated:
                answered = replace(message, attempts=verdict.attempts, reference=reference)
                acknowledged = self.outbox.answer(session, answered, call, decision, submission, verdict.conflict)
            _record_decided(session, actor, pk, verdict, reference)
            if verdict.state == MessageState.REVIEW:
                review_folder = self._add_to_review(session, pk, submission, verdict)
            in_review = verdict.state == MessageState.REVIEW
            result = Processed(pk, message.message_key, decision.outcome.value, reference, acknowledged, in_review)
            log.info(
                "%s → %s (%s)",
                message.message_key,
                decision.outcome.value,
                decision.rule,
                extra=log_fields(message, reference),
            )
            failpoint("decide.commit")
        if review_folder is not None:
            self.effects.run_claimed([review_folder])
        if self.on_decided is not None:
            self.on_decided(result)
        return result

    def _message_and_call(
        self, session: Session, pk: int, submission: Submission, expect: MessageState
    ) -> tuple[MessageFacts, CallSettings]:
        """The message (locked, still as ``expect`` says) and its call, whose decisions are then serialised."""
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
        return message, call

    def _decide(
        self,
        session: Session,
        message: MessageFacts,
        call: CallSettings,
        submission: Submission,
        expect: MessageState,
        confirmed: bool,
    ) -> Verdict:
        """The facts the rules need, looked up; the rules' decision; a conflict of identity held."""
        form = submission.form
        rules = self.rules[call.id]
        identity = self._identify(submission, rules) if form else None
        priors = load_priors(session, call.id, message.arrival, message.id, identity, form.sha256 if form else None)
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
        in_review = decision.outcome == Outcome.UNREADABLE or conflict is not None
        return Verdict(
            decision,
            conflict,
            MessageState.REVIEW if in_review else MessageState.DONE,
            message.attempts + 1 if expect == MessageState.REVIEW else message.attempts,
            submission.unreadable.reason if submission.unreadable else None,
        )

    def _store(
        self,
        session: Session,
        message: MessageFacts,
        call: CallSettings,
        submission: Submission,
        verdict: Verdict,
        expect: MessageState,
    ) -> str | None:
        """The message's decided columns, its application, attachments and bounces; returns its reference."""
        pk, decision = message.id, verdict.decision
        changes: dict[str, Any] = {
            "call_id": call.id,
            "state": verdict.state,
            "claimed_by": None,
            "attempts": verdict.attempts,
            "outcome": decision.outcome.value,
            "reason": verdict.reason,
            "decision": decision_record(decision),
            "reading": to_jsonable(submission),
            "supersedes_key": decision.supersedes,
            "duplicate_of_key": decision.duplicate_of,
            "decided_at": utcnow(),
            "error": None,
            **person_columns(decision, submission),
        }
        if (decision.outcome in APPLICATION_OUTCOMES or decision.outcome == Outcome.LATE) and not verdict.held:
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
        return reference

    def _add_to_review(self, session: Session, pk: int, submission: Submission, verdict: Verdict) -> DueEffect:
        """The review folder (and IMAP move) this decision implies, added as effects; returns the folder's."""
        decision, conflict = verdict.decision, verdict.conflict
        stored = session.get_one(Message, pk)
        diagnostics = {} if conflict is None else conflict_diagnostics(session, conflict)
        if submission.unreadable is not None:  # e.g. the calls an ambiguous form could belong to
            diagnostics["detail"] = submission.unreadable.detail
        reason = IDENTITY_CONFLICT if verdict.held else verdict.reason or decision.rule
        return add_review_effects(
            session, self.settings, stored, self.worker, reason, decision.explanation, **diagnostics
        )

    def _identify(self, submission: Submission, rules: CallRules) -> Identity:
        """Who the form names, computed once, within the time budget: a message that overruns it goes to
        review (the computation is abandoned) rather than holding up every message behind it."""
        assert submission.form is not None
        values = dict(submission.form.values())
        identifying = self._identifying.submit(
            identity_of, values, submission.envelope.from_addr, rules.institution_aliases
        )
        budget = self.settings.security.decide_budget_s
        try:
            return identifying.result(timeout=budget)
        except FutureTimeout:
            identifying.cancel()
            raise DecideOverrun(f"identifying the applicant took over {budget:g} s") from None

    def ours_among(self, session: Session, envelope: Envelope) -> frozenset[str]:
        """Which of the Message-IDs ``envelope`` refers to the fund sent: the fact decide() needs, looked up."""
        return frozenset(mid for mid in referred_ids(envelope) if self._is_ours(session, mid))

    def _is_ours(self, session: Session, message_id: str) -> bool:
        if is_our_message_id(message_id, self.settings.call):
            return True
        return is_our_answer(session, message_id)

    def send_to_review(self, pk: int, exc: BaseException) -> Processed:
        """Deciding ``pk`` failed: record the error and put the message in the review queue."""
        detail = "".join(traceback.format_exception(exc))
        overran = isinstance(exc, DecideOverrun)
        reason = "timeout" if overran else "internal-error"
        with self.store.sessions() as session, session.begin():
            message = session.get_one(Message, pk)
            log.error("processing failed, sent to review: %s", exc, extra=log_fields(message))
            message.state = MessageState.REVIEW
            message.outcome = Outcome.UNREADABLE.value
            message.reason = reason
            message.error = detail[-20000:]
            message.claimed_by = None
            message.decided_at = utcnow()
            add_event(
                session,
                EventKind.FAILED,
                ACTOR,
                pk,
                error=f"{exc.__class__.__name__}: {exc}",
                reason=reason,
                state=MessageState.REVIEW.value,
            )
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


def _record_decided(session: Session, actor: str, pk: int, verdict: Verdict, reference: str | None) -> None:
    """The ``decided`` event: the outcome, the deciding rule and the rules tried before it, and what
    the message's row says of the decision, so that a workbook of an earlier day can show this one
    after a later decision has replaced it on the row."""
    decision = verdict.decision
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
        state=verdict.state.value,
        reason=verdict.reason,
        flags=list(decision.flags),
        missing=list(decision.missing),
        supersedes=decision.supersedes,
        duplicate_of=decision.duplicate_of,
    )
