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
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, true, union
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailbot.acknowledge import (
    AckContext,
    ComposedMail,
    OutgoingHeaders,
    alternative_mail,
    compose_acknowledgement,
    is_our_message_id,
    make_message_id,
    message_bytes,
    valid_address,
    valid_message_id,
)
from mailbot.clock import utcnow
from mailbot.config import CallSettings, Settings
from mailbot.decide import (
    ANSWERED,
    APPLICATION_OUTCOMES,
    CallRules,
    Decision,
    Outcome,
    PriorApplication,
    decide,
)
from mailbot.identity import Identity, identity_of, same_person
from mailbot.metrics import StageTimings
from mailbot.review import ReviewQueue
from parsers.limits import MIB, Limits
from parsers.message import too_large
from parsers.model import Submission, to_jsonable
from parsers.spec import FormSpec
from storage.models import (
    APPLICATIONS,
    MESSAGES,
    OUTBOX,
    Applicant,
    Application,
    AttachmentRecord,
    Message,
    MessageState,
    OutboxMail,
    OutboxState,
)
from storage.store import Store
from templates import TemplateSet, local_time, one_line

log = logging.getLogger(__name__)

# reads the archived message at a path (in a worker process, or in this one)
Reader = Callable[[Path, FormSpec], "Future[Submission]"]


class StateChanged(Exception):
    """The message is no longer in the state this step expected (someone else handled it)."""


class Deferred(Exception):
    """An earlier message of the same call is still being read by another worker: decide it first."""


ACTOR = "pipeline"


@dataclass(frozen=True)
class Processed:
    message_pk: int
    message_key: str
    outcome: str
    reference: str | None
    acknowledged: bool
    in_review: bool = False


def as_stored(identity: Identity) -> Identity:
    """The identity cut to the columns that hold it, so an absurdly long name is stored and matched alike."""
    return Identity(
        identity.email[:500] if identity.email else None,
        identity.phone[:100] if identity.phone else None,
        identity.name_key[:500] if identity.name_key else None,
        identity.institution_key[:500] if identity.institution_key else None,
    )


def limits_of(settings: Settings) -> Limits:
    return replace(Limits(), max_message_bytes=settings.processing.max_message_mb * MIB)


def format_reference(call: CallSettings, number: int) -> str:
    return f"{call.reference_prefix}-{number:04d}"


def _log_extra(message: Message, reference: str | None = None) -> dict[str, Any]:
    return {"message_id": message.message_id or message.message_key, "reference": reference}


class Processor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        reader: Reader,
        templates: TemplateSet,
        review: ReviewQueue,
        worker: str,
        on_decided: Callable[[Processed], None] | None = None,
        timings: StageTimings | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reader = reader
        self.templates = templates
        self.review = review
        self.worker = worker
        self.on_decided = on_decided
        self.timings = timings or StageTimings()
        self._deferred = False
        self.limits = limits_of(settings)
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
                claimed = self.store.claim_received(self.worker, room)
                more = bool(claimed)
                window.extend((pk, self._start(pk)) for pk in claimed)
            if not window:
                return done
            pk, pending = window.popleft()
            result = self._finish(pk, pending)
            if result is not None:
                done.append(result)

    def _start(self, pk: int) -> Future[Submission] | BaseException:
        try:
            with self.timings.stage("parse", count=0):
                return self._start_reading(pk)
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
            self.store.unclaim(pk)
            self._deferred = True
            return None
        except (OperationalError, InterfaceError):
            # the database, not the message, failed (a restart, a lost connection, a long lock):
            # the round stops and the claim is given back, so the message is decided again later.
            # What the message itself causes (a value too long for its column) goes to review below.
            raise
        except Exception as exc:
            return self.send_to_review(pk, exc)

    def reprocess(self, pk: int, submission: Submission | None = None, actor: str = ACTOR) -> Processed:
        """Decide a message in the review queue again (with today's readers, or with ``submission``).

        Nothing changes unless the whole decision commits: a failure leaves the item in the queue.
        """
        if submission is None:
            submission = self._start_reading(pk).result()
        return self.decide_and_store(pk, submission, expect=MessageState.REVIEW, actor=actor)

    def _start_reading(self, pk: int) -> Future[Submission]:
        with self.store.sessions() as session:
            call_id, sha, size = session.execute(
                select(Message.call_id, Message.sha256, Message.size).where(Message.id == pk)
            ).one()
        if size > self.limits.max_message_bytes:
            # refused unread: neither this process nor a worker holds a message of that size
            refused: Future[Submission] = Future()
            refused.set_result(too_large(self.store.archive.head(sha), size, self.limits))
            return refused
        original = self.store.archive.path_for(sha)
        if not original.is_file():
            raise FileNotFoundError(f"the archived message {sha} is missing")
        return self.reader(original, self.settings.call_by_id(call_id or self.settings.call[0].id).form_spec)

    # --- deciding and storing ----------------------------------------------------------------

    def decide_and_store(
        self,
        pk: int,
        submission: Submission,
        expect: MessageState = MessageState.PROCESSING,
        actor: str = ACTOR,
    ) -> Processed:
        """Decide ``pk`` and store everything that follows from it in one transaction.

        ``expect`` is the state the message must still be in (another worker, or an admin's
        concurrent action, may have finished it meanwhile); if it is not, nothing changes.
        """
        # no flush before the commit: the queries below never need this message's own changes,
        # and one flush at the end writes everything in as few statements as it can
        with self.store.sessions() as session, session.begin(), session.no_autoflush:
            message = session.get_one(Message, pk, with_for_update=True)
            if message.state != expect:
                raise StateChanged(f"message {message.message_key} is {message.state}, not {expect}")
            if expect == MessageState.REVIEW:
                message.attempts += 1  # counted only if the retry commits
            call = self.settings.call_by_id(message.call_id or self.settings.call[0].id)
            previous_outcome = message.outcome
            self.store.lock_call(session, call.id)
            if (
                expect == MessageState.PROCESSING
                and self.store.concurrent
                and self.store.earlier_undecided(session, call.id, message.arrival, pk)
            ):
                # decisions depend on the ones before them: another worker's earlier message goes first
                raise Deferred(f"{message.message_key} waits for an earlier message of {call.id}")
            form = submission.form
            rules = self.rules[call.id]
            probe = (
                as_stored(identity_of(dict(form.values()), submission.envelope.from_addr, rules.institution_aliases))
                if form
                else None
            )
            priors = load_priors(session, call.id, message.arrival, pk, probe, form.sha256 if form else None)
            decide_started = time.perf_counter()
            decision = decide(
                submission,
                message.message_key,
                message.arrival,
                self.rules[call.id],
                priors,
                lambda mid: self._is_ours(session, mid),
            )
            self.timings.add("decide", time.perf_counter() - decide_started)
            message.outcome = decision.outcome.value
            message.reason = submission.unreadable.reason if submission.unreadable else None
            message.decision = decision_record(decision)
            message.reading = to_jsonable(submission)
            message.supersedes_key = decision.supersedes
            message.duplicate_of_key = decision.duplicate_of
            message.decided_at = utcnow()
            message.error = None
            self._remember_person(message, decision, submission)
            message.state = MessageState.REVIEW if decision.outcome == Outcome.UNREADABLE else MessageState.DONE
            message.claimed_by = None
            # a first decision has stored nothing yet; a retry keeps what the first one stored
            if expect == MessageState.PROCESSING or not message.attachments:
                self._store_attachments(session, message, submission)
            if decision.outcome in APPLICATION_OUTCOMES or decision.outcome == Outcome.LATE:
                self._store_application(session, message, call, decision, submission)
            self._record_bounces(session, submission)
            # counted up late: on SQLite this first write makes the other threads wait for the commit
            reference = message.reference  # a retried message keeps the number it was given
            if reference is None and decision.outcome != Outcome.IGNORED:
                reference = format_reference(call, self.store.next_reference_number(session, call.id))
            message.reference = reference
            acknowledged = False
            # a retry that ends where it was has nothing new to tell the applicant
            repeated = expect == MessageState.REVIEW and previous_outcome == decision.outcome.value
            if decision.outcome in ANSWERED and not repeated:
                acknowledged = self._queue_acknowledgement(session, message, call, decision, submission)
            self.store.add_event(
                session,
                "decided",
                actor,
                pk,
                outcome=decision.outcome.value,
                rule=decision.rule,
                reference=reference,
                explanation=decision.explanation,
            )
            if message.state == MessageState.REVIEW:
                self.review.add(
                    message,
                    self.store.archive.path_for(message.sha256),
                    message.reason or decision.rule,
                    decision.explanation,
                )
            result = Processed(
                pk,
                message.message_key,
                decision.outcome.value,
                reference,
                acknowledged,
                in_review=message.state == MessageState.REVIEW,
            )
            log.info(
                "%s → %s (%s)",
                message.message_key,
                decision.outcome.value,
                decision.rule,
                extra=_log_extra(message, reference),
            )
        if self.on_decided is not None:
            self.on_decided(result)
        return result

    @staticmethod
    def _remember_person(message: Message, decision: Decision, submission: Submission) -> None:
        form = submission.form
        identity = as_stored(decision.identity) if decision.identity else None
        title = form.value("project_title") if form else None
        message.form_sha256 = form.sha256 if form else None
        message.project_title = title if isinstance(title, str) else None
        message.person_email = identity.email if identity else None
        message.person_phone = identity.phone if identity else None
        message.person_name_key = identity.name_key if identity else None
        message.person_institution_key = identity.institution_key if identity else None

    def _is_ours(self, session: Session, message_id: str) -> bool:
        if is_our_message_id(message_id, self.settings.call):
            return True
        return session.scalar(select(OUTBOX.c.id).where(OUTBOX.c.message_id == message_id)) is not None

    def _store_attachments(self, session: Session, message: Message, submission: Submission) -> None:
        for attachment in submission.attachments:
            session.add(
                AttachmentRecord(
                    message_pk=message.id,
                    filename=attachment.filename,
                    kind=attachment.kind,
                    size=attachment.size,
                    sha256=attachment.sha256,
                    role=attachment.role,
                )
            )

    def _store_application(
        self,
        session: Session,
        message: Message,
        call: CallSettings,
        decision: Decision,
        submission: Submission,
    ) -> None:
        form = submission.form
        if form is None or decision.identity is None:
            return
        now = utcnow()
        values = to_jsonable(form.values())
        key = decision.application_key or message.message_key
        application = session.scalar(select(Application).where(Application.application_key == key))
        identity = as_stored(decision.identity)
        if application is None:
            applicant = find_applicant(session, call.id, identity) or Applicant(call_id=call.id)
            applicant.name = str(values.get("applicant_name") or applicant.name or "")[:500] or None
            applicant.name_key = identity.name_key or applicant.name_key
            applicant.institution_key = identity.institution_key or applicant.institution_key
            applicant.email = identity.email or applicant.email
            applicant.phone = identity.phone or applicant.phone
            application = Application(
                call_id=call.id,
                application_key=key,
                applicant=applicant,
                created_at=now,
                duplicate_of_key=decision.duplicate_of,
            )
            session.add(application)
        application.current_message_pk = message.id
        application.status = _application_status(decision.outcome, application.status)
        application.project_title = str(values.get("project_title") or "") or None
        application.fields = values
        application.missing = list(decision.missing)
        application.flags = list(decision.flags)
        application.updated_at = now
        message.application = application

    def _record_bounces(self, session: Session, submission: Submission) -> None:
        for bounced_id in submission.envelope.bounced_message_ids:
            mail = session.scalar(select(OutboxMail).where(OutboxMail.message_id == bounced_id))
            if mail is not None and mail.bounced_at is None:
                mail.bounced_at = utcnow()
                self.store.add_event(session, "bounced", ACTOR, mail.message_pk, message_id=bounced_id)

    def _queue_acknowledgement(
        self,
        session: Session,
        message: Message,
        call: CallSettings,
        decision: Decision,
        submission: Submission,
    ) -> bool:
        envelope = submission.envelope
        recipient = (envelope.reply_to[0] if envelope.reply_to else envelope.from_addr).lower()
        form = submission.form
        fields = form.values() if form else {}
        applicant_email = fields.get("email") if isinstance(fields.get("email"), str) else None
        now = utcnow()
        # attempts differ between a first decision and a retry, so each answer has its own Message-ID
        message_id = make_message_id(call, message.reference, f"{message.id}.{message.attempts}.{message.sha256}")
        context = AckContext(
            call=call,
            outcome=decision.outcome.value,
            reference=message.reference,
            fields=fields,
            form_file=form.attachment if form else None,
            missing=decision.missing,
            arrival=message.arrival,
            supersedes_reference=reference_of(session, decision.supersedes),
            duplicate_of_reference=reference_of(session, decision.duplicate_of),
            unreadable_reason=submission.unreadable.reason if submission.unreadable else None,
            original_message_id=envelope.message_id,
            original_references=envelope.references,
            original_subject=envelope.subject,
            reply_to=recipient,
            applicant_email=str(applicant_email) if applicant_email else None,
            message_id=message_id,
        )
        suppressed = self._suppression(session, recipient)
        if valid_address(recipient) is None:
            self.store.add_event(session, "not-answered", ACTOR, message.id, why=suppressed or "no usable address")
            log.warning("not answering: %s", suppressed or "no usable address", extra=_log_extra(message))
            return False
        mail = compose_acknowledgement(context, self.templates, now)
        self._add_to_outbox(session, "ack", message, call, recipient, mail, suppressed)
        if suppressed:
            log.warning("not answering %s: %s", recipient, suppressed, extra=_log_extra(message))
        return suppressed is None

    def queue_notice(self, session: Session, message: Message, note: str) -> bool:
        """Tell the sender that an admin closed their message (``queue reject --notify``)."""
        call = self.settings.call_by_id(message.call_id or self.settings.call[0].id)
        recipient = valid_address(message.from_addr)
        if recipient is None or recipient in self.settings.own_addresses:
            return False
        now = utcnow()
        message_id = make_message_id(call, message.reference, f"notice.{message.id}.{now.isoformat()}")
        context = {
            "call": call,
            "reference": message.reference,
            "arrival": local_time(message.arrival, call.timezone),
            "original_subject": one_line(message.subject, 200),
            "note": one_line(note, 1000),
            "signature": one_line(call.sender.name) or call.name_zh,
        }
        subject = one_line(f"【已处理】{call.name_zh} · {message.reference or ''} / Closed: {message.reference or ''}")
        context["subject"] = subject
        original = valid_message_id(message.message_id)
        raw = alternative_mail(
            OutgoingHeaders(
                sender_name=one_line(call.sender.name, 80),
                sender_address=call.sender.address,
                to=recipient,
                cc=None,
                subject=subject,
                date=now.astimezone(call.tz),
                message_id=message_id,
                in_reply_to=original,
                references=[original] if original else [],
            ),
            self.templates.render("notice/closed.txt.j2", context),
            self.templates.render("notice/closed.html.j2", context),
        )
        mail = ComposedMail(message_id, (recipient.lower(),), raw)
        self._add_to_outbox(session, "notice", message, call, recipient, mail, None)
        return True

    def _add_to_outbox(
        self,
        session: Session,
        kind: str,
        message: Message,
        call: CallSettings,
        recipient: str,
        mail: ComposedMail,
        suppressed: str | None,
    ) -> None:
        now = utcnow()
        session.add(
            OutboxMail(
                kind=kind,
                message_pk=message.id,
                call_id=call.id,
                mailbox=self.settings.mailbox_for_call(call.id),
                sender=call.sender.address,
                recipients=list(mail.recipients),
                to_addr=recipient,
                message_id=mail.message_id,
                raw=message_bytes(mail, self.settings.smtp),
                state=OutboxState.SUPPRESSED if suppressed else OutboxState.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                last_reply=suppressed,
            )
        )

    def _suppression(self, session: Session, recipient: str) -> str | None:
        if not recipient or "@" not in recipient:
            return "the sender has no usable address"
        if recipient in self.settings.own_addresses:
            return "the sender is one of our own addresses"
        day_ago = utcnow() - timedelta(days=1)
        count = (
            session.scalar(
                select(func.count())
                .select_from(OUTBOX)
                .where(
                    OUTBOX.c.to_addr == recipient,
                    OUTBOX.c.kind == "ack",
                    OUTBOX.c.created_at >= day_ago,
                    OUTBOX.c.state != OutboxState.SUPPRESSED,
                )
            )
            or 0
        )
        limit = self.settings.smtp.max_answers_per_recipient_per_day
        if count >= limit:
            return f"{count} automatic answers to this address in the last 24 hours (limit {limit})"
        return None

    # --- failures -----------------------------------------------------------------------------

    def send_to_review(self, pk: int, exc: BaseException) -> Processed:
        detail = "".join(traceback.format_exception(exc))
        with self.store.sessions() as session, session.begin():
            message = session.get_one(Message, pk)
            log.error("processing failed, sent to review: %s", exc, extra=_log_extra(message))
            message.state = MessageState.REVIEW
            message.outcome = Outcome.UNREADABLE.value
            message.reason = "internal-error"
            message.error = detail[-20000:]
            message.claimed_by = None
            message.decided_at = utcnow()
            self.store.add_event(session, "failed", ACTOR, pk, error=f"{exc.__class__.__name__}: {exc}")
            original = self.store.archive.path_for(message.sha256)
            self.review.add(
                message,
                original if original.exists() else b"",
                "internal-error",
                f"processing stopped with an error ({exc.__class__.__name__}); a person must look",
            )
            return Processed(
                pk, message.message_key, Outcome.UNREADABLE.value, message.reference, False, in_review=True
            )


def _application_status(outcome: Outcome, previous: str | None) -> str:
    if outcome == Outcome.REVISION:
        return previous or Outcome.ACCEPTED.value
    return outcome.value


def decision_record(decision: Decision) -> dict[str, Any]:
    record: dict[str, Any] = to_jsonable(decision)
    record["outcome"] = decision.outcome.value
    return record


def reference_of(session: Session, message_key: str | None) -> str | None:
    if message_key is None:
        return None
    return session.scalar(select(MESSAGES.c.reference).where(MESSAGES.c.message_key == message_key))


def find_applicant(session: Session, call_id: str, identity: Identity) -> Applicant | None:
    clues = [
        column == value
        for column, value in (
            (Applicant.email, identity.email),
            (Applicant.phone, identity.phone),
            (Applicant.name_key, identity.name_key),
        )
        if value
    ]
    if not clues:
        return None
    for applicant in session.scalars(select(Applicant).where(Applicant.call_id == call_id, or_(*clues))):
        known = Identity(applicant.email, applicant.phone, applicant.name_key, applicant.institution_key)
        if same_person(known, identity):
            return applicant
    return None


def load_priors(
    session: Session, call_id: str, before: datetime, exclude_pk: int, probe: Identity | None, form_sha256: str | None
) -> list[PriorApplication]:
    """Earlier readable forms of this call that could be the same person's, as the rules see them.

    Only messages sharing an email or a phone (under the same or no name), name and institution,
    or the very file with ``probe`` can match (the rules need one of them), so those are found by
    index; every message of their applications comes along, since the rules look at them whole.
    """
    if probe is None:
        return []
    columns = (
        MESSAGES.c.id,
        MESSAGES.c.message_key,
        MESSAGES.c.arrival,
        MESSAGES.c.outcome,
        MESSAGES.c.person_email,
        MESSAGES.c.person_phone,
        MESSAGES.c.person_name_key,
        MESSAGES.c.person_institution_key,
        MESSAGES.c.project_title,
        MESSAGES.c.form_sha256,
        APPLICATIONS.c.application_key,
        MESSAGES.c.reference,
    )
    # the rules' own conditions (identity.match_reason), so a contact shared by many forms (a
    # secretary's phone, a placeholder number) does not bring every form naming someone else
    same_name_or_unnamed = (
        or_(MESSAGES.c.person_name_key == probe.name_key, MESSAGES.c.person_name_key.is_(None))
        if probe.name_key
        else true()
    )
    clues = [
        and_(column == value, same_name_or_unnamed)
        for column, value in ((MESSAGES.c.person_email, probe.email), (MESSAGES.c.person_phone, probe.phone))
        if value
    ]
    if form_sha256:
        clues.append(MESSAGES.c.form_sha256 == form_sha256)
    if probe.name_key and probe.institution_key:
        # a name matches only at the same institution: namesakes elsewhere are not even candidates
        clues.append(
            and_(
                MESSAGES.c.person_name_key == probe.name_key, MESSAGES.c.person_institution_key == probe.institution_key
            )
        )
    if not clues:
        return []
    # One SELECT per clue, each with the call alone beside it, so that each is answered from the
    # index of its clue: written as one OR, or with the arrival beside it, SQLite read every earlier
    # message of the call instead, and deciding slowed down as the call filled up. Which of the few
    # rows found count (earlier, readable, not this message) is checked here.
    counted = {o.value for o in APPLICATION_OUTCOMES}

    def counts(pk: int, outcome: str | None, arrival: datetime) -> bool:
        return pk != exclude_pk and outcome in counted and arrival <= before

    clue_matches = union(
        *(
            select(MESSAGES.c.id, MESSAGES.c.outcome, MESSAGES.c.arrival, MESSAGES.c.application_id).where(
                MESSAGES.c.call_id == call_id, clue
            )
            for clue in clues
        )
    )
    applications = {
        row.application_id
        for row in session.execute(clue_matches)
        if row.application_id is not None and counts(row.id, row.outcome, row.arrival)
    }
    if not applications:
        return []
    found = session.execute(
        select(*columns)
        .join(APPLICATIONS, MESSAGES.c.application_id == APPLICATIONS.c.id)
        .where(MESSAGES.c.application_id.in_(applications))
        .order_by(MESSAGES.c.arrival, MESSAGES.c.id)
    )
    rows = [row for row in found if counts(row.id, row.outcome, row.arrival)]
    return [
        PriorApplication(
            message_key=row.message_key,
            arrival=row.arrival,
            outcome=Outcome(str(row.outcome)),
            identity=Identity(row.person_email, row.person_phone, row.person_name_key, row.person_institution_key),
            project_title=row.project_title,
            form_sha256=row.form_sha256,
            application_key=row.application_key,
            reference=row.reference,
        )
        for row in rows
    ]
