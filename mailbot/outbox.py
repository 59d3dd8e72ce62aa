"""The outbox: every mail the bot sends is added here, and only here.

An answer to a decided message (or the fixed answer to a held one, with notices to the addresses
on record and to the form's own address), a notice that an admin closed a message, the alert that a
sending limit holds answers back, and the coordinators' daily digest: each is composed by
``mailbot.acknowledge`` or ``mailbot.digest`` through the one writer (``mailbot.mail_writer``),
then written as one outbox row by :meth:`Outbox._add`, in the caller's transaction, so an answer
commits with the decision it tells of. The sender (``mailbot.sender``) takes the rows from there.

The per-recipient and overall sending limits are checked here as well, as each answer is added: one
over a limit is still written, as ``suppressed`` with the reason, for the digest and ``status`` to show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session

from mailbot.acknowledge import (
    AckContext,
    compose_acknowledgement,
    compose_notice,
    make_message_id,
    valid_address,
)
from mailbot.clock import utcnow
from mailbot.config import CallSettings, Settings
from mailbot.decision import Decision
from mailbot.guard import Conflict
from mailbot.mail_writer import ComposedMail, message_bytes
from mailbot.security import Answerability, answerability, domain_of, recipient_key
from parsers.model import Envelope, Submission
from storage.answering import add_to_outbox, answers_counted, limit_alerted_since
from storage.decisions import reference_of
from storage.events import EventKind, add_event
from storage.models import Message, OutboxState
from templates import TemplateSet, one_line

log = logging.getLogger(__name__)

# answers are added while a message is decided: the event log names the pipeline as their actor
ACTOR = "pipeline"


class AnsweredMessage(Protocol):
    """What answering needs of a message's row (the pipeline's facts, or the ORM row of an admin command)."""

    @property
    def id(self) -> int: ...
    @property
    def message_key(self) -> str: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def sha256(self) -> str: ...
    @property
    def call_id(self) -> str | None: ...
    @property
    def arrival(self) -> datetime: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reference(self) -> str | None: ...


def _log_extra(message: AnsweredMessage) -> dict[str, str | None]:
    return {"message_id": message.message_id or message.message_key, "reference": None}


def coordinator_addresses(call: CallSettings) -> list[str]:
    """The call's coordinators that are valid addresses, lower-cased, each once."""
    found = []
    for entry in call.coordinators:
        address = valid_address(entry)
        if address is None:
            log.warning("call %s: coordinator %r is not a valid address; left out", call.id, entry)
        elif address.lower() not in found:
            found.append(address.lower())
    return found


# ---------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class LimitHit:
    why: str  # for the outbox row and the log
    overall: bool  # a cap on all answers (the coordinators are alerted), not one recipient's
    name: str  # which limit, for the alert


def limit_hit(session: Session, settings: Settings, recipient: str, now: datetime) -> LimitHit | None:
    """The first limit another answer to ``recipient`` would break, or None."""
    security = settings.security
    day_ago, hour_ago = now - timedelta(days=1), now - timedelta(hours=1)
    per_recipient = settings.smtp.max_answers_per_recipient_per_day
    domain = domain_of(recipient)
    counts = answers_counted(session, day_ago, hour_ago, recipient_key(recipient), domain)
    if counts.to_address_in_day >= per_recipient:
        why = (
            f"{counts.to_address_in_day} automatic answers to this address in the last 24 hours (limit {per_recipient})"
        )
        return LimitHit(why, False, "max_answers_per_recipient_per_day")
    if counts.to_domain_in_day >= security.max_answers_per_domain_per_day:
        limit = security.max_answers_per_domain_per_day
        return LimitHit(
            f"{counts.to_domain_in_day} automatic answers to {domain} in the last 24 hours (limit {limit})",
            True,
            "max_answers_per_domain_per_day",
        )
    for name, sent, limit, span in (
        ("max_answers_per_hour", counts.in_hour, security.max_answers_per_hour, "hour"),
        ("max_answers_per_day", counts.in_day, security.max_answers_per_day, "24 hours"),
    ):
        if sent >= limit:
            return LimitHit(f"{sent} automatic answers in the last {span} (limit {limit})", True, name)
    return None


# ---------------------------------------------------------------------------------------------- the outbox


class Outbox:
    """Adds answers, notices, alerts and digests to the outbox table, within the sending limits."""

    def __init__(self, settings: Settings, templates: TemplateSet) -> None:
        self.settings = settings
        self.templates = templates

    def answerability(self, envelope: Envelope) -> Answerability:
        security = self.settings.security
        return answerability(
            envelope, self.settings.own_addresses, security.trusted_authserv_ids, security.spam_verdict_headers
        )

    def answer(
        self,
        session: Session,
        message: AnsweredMessage,
        call: CallSettings,
        decision: Decision,
        submission: Submission,
        conflict: Conflict | None = None,
    ) -> bool:
        """Add the answer to a decided message; whether it will be sent (not withheld, not unanswerable).

        A form held as an identity conflict gets a fixed answer (nothing of the application it names)
        and the addresses on record are told; any other answer goes with a notice to the form's own
        address when that differs from an authenticated sender's.
        """
        envelope = submission.envelope
        answer = self.answerability(envelope)
        recipient = (answer.recipient or envelope.from_addr).lower()
        now = utcnow()
        # attempts differ between a first decision and a retry, so each answer has its own Message-ID
        message_id = make_message_id(call, message.reference, f"{message.id}.{message.attempts}.{message.sha256}")
        suppressed = answer.why_not or self._suppression(session, recipient, call, now)
        if valid_address(recipient) is None:
            why = suppressed or "no usable address"
            add_event(session, EventKind.NOT_ANSWERED, ACTOR, message.id, why=why)
            log.warning("not answering: %s", why, extra=_log_extra(message))
            return False
        if conflict is not None:
            mail = compose_notice(
                self.templates,
                "held",
                call,
                message.reference,
                recipient,
                message_id,
                message.arrival,
                envelope.message_id,
                "auto-replied",
            )
            self._add(session, "ack", message.id, call, recipient, mail, suppressed)
            for address in conflict.on_record:
                self._add_notice(session, message, call, address, "conflict", now, stranger=conflict.sender)
        else:
            context = self._ack_context(session, message, call, decision, submission, answer, recipient, message_id)
            mail = compose_acknowledgement(context, self.templates, now)
            self._add(session, "ack", message.id, call, recipient, mail, suppressed)
            if suppressed is None:
                self._tell_form_address(session, message, call, answer, recipient, context.applicant_email, now)
        if suppressed:
            log.warning("not answering %s: %s", recipient, suppressed, extra=_log_extra(message))
        return suppressed is None

    def answer_again(
        self, session: Session, message: AnsweredMessage, decision: Decision, submission: Submission
    ) -> bool:
        """Add a new answer to ``message`` (an admin corrected its fields and asked to tell the applicant)."""
        call = self.settings.call_by_id(message.call_id or self.settings.call[0].id)
        return self.answer(session, message, call, decision, submission)

    def closed_notice(self, session: Session, message: Message, note: str) -> bool:
        """Tell the sender that an admin closed their message (``queue reject --notify``); whether one was added."""
        call = self.settings.call_by_id(message.call_id or self.settings.call[0].id)
        recipient = valid_address(message.from_addr)
        if recipient is None or recipient in self.settings.own_addresses:
            return False
        now = utcnow()
        message_id = make_message_id(call, message.reference, f"notice.{message.id}.{now.isoformat()}")
        mail = compose_notice(
            self.templates,
            "closed",
            call,
            message.reference,
            recipient,
            message_id,
            message.arrival,
            message.message_id,
            "auto-replied",
            original_subject=one_line(message.subject, 200),
            note=one_line(note, 1000),
        )
        self._add(session, "notice", message.id, call, recipient, mail, None)
        return True

    def digest(self, session: Session, call: CallSettings, mail: ComposedMail, queued_at: datetime) -> int:
        """Add a composed digest for the call's coordinators (never limited); its outbox id."""
        return self._add(session, "digest", None, call, None, mail, None, at=queued_at)

    def _ack_context(
        self,
        session: Session,
        message: AnsweredMessage,
        call: CallSettings,
        decision: Decision,
        submission: Submission,
        answer: Answerability,
        recipient: str,
        message_id: str,
    ) -> AckContext:
        envelope, form, unreadable = submission.envelope, submission.form, submission.unreadable
        fields = form.values() if form else {}
        form_email = fields.get("email")
        return AckContext(
            call=call,
            outcome=decision.outcome.value,
            reference=message.reference,
            fields=fields,
            form_file=form.attachment if form else (unreadable.attachment if unreadable else None),
            missing=decision.missing,
            arrival=message.arrival,
            supersedes_reference=reference_of(session, decision.supersedes),
            duplicate_of_reference=reference_of(session, decision.duplicate_of),
            unreadable_reason=unreadable.reason if unreadable else None,
            original_message_id=envelope.message_id,
            original_references=envelope.references,
            original_subject=envelope.subject,
            reply_to=recipient,
            applicant_email=form_email if isinstance(form_email, str) else None,
            message_id=message_id,
            echo_links=answer.authenticated,
        )

    def _add_notice(
        self,
        session: Session,
        message: AnsweredMessage,
        call: CallSettings,
        recipient: str,
        template: str,
        now: datetime,
        **extra: str,
    ) -> None:
        """A fixed-text notice (not a reply: no thread, ``auto-generated``), within the limits."""
        address = valid_address(recipient)
        if address is None or address.lower() in self.settings.own_addresses:
            return
        message_id = make_message_id(call, message.reference, f"{template}.{message.id}.{message.attempts}.{address}")
        mail = compose_notice(
            self.templates, template, call, message.reference, address, message_id, now, None, "auto-generated", **extra
        )
        self._add(session, "notice", message.id, call, address, mail, self._suppression(session, address, call, now))

    def _tell_form_address(
        self,
        session: Session,
        message: AnsweredMessage,
        call: CallSettings,
        answer: Answerability,
        recipient: str,
        applicant_email: str | None,
        now: datetime,
    ) -> None:
        """The form names another address: a fixed notice there, and only when the sender authenticated."""
        address = valid_address(applicant_email.strip()) if applicant_email else None
        if not answer.authenticated or address is None or recipient_key(address) == recipient_key(recipient):
            return
        self._add_notice(session, message, call, address, "copy", now)

    def _suppression(self, session: Session, recipient: str, call: CallSettings, now: datetime) -> str | None:
        """Why an answer to ``recipient`` is withheld (ours, unusable, over a limit), or None."""
        if not recipient or "@" not in recipient:
            return "the sender has no usable address"
        if recipient.lower() in self.settings.own_addresses:
            return "the sender is one of our own addresses"
        hit = limit_hit(session, self.settings, recipient, now)
        if hit is None:
            return None
        if hit.overall:
            self._alert_once(session, call, hit, now)
        return hit.why

    def _alert_once(self, session: Session, call: CallSettings, hit: LimitHit, now: datetime) -> None:
        """Tell the call's coordinators, once a day per limit, that answers are held back."""
        if limit_alerted_since(session, hit.name, call.id, now - timedelta(days=1)):
            return
        add_event(session, EventKind.ANSWER_LIMIT, ACTOR, None, limit=hit.name, call=call.id, why=hit.why)
        log.error("automatic answers paused: %s", hit.why)
        for address in coordinator_addresses(call):
            message_id = make_message_id(call, None, f"limit.{hit.name}.{now.isoformat()}.{address}")
            mail = compose_notice(
                self.templates, "limit", call, None, address, message_id, now, None, "auto-generated", limit=hit.why
            )
            self._add(session, "alert", None, call, address, mail, None)

    def _add(
        self,
        session: Session,
        kind: str,
        message_pk: int | None,
        call: CallSettings,
        recipient: str | None,
        mail: ComposedMail,
        suppressed: str | None,
        at: datetime | None = None,
    ) -> int:
        """Write one outbox row, signed as it will be sent; its id. ``recipient``: the person it answers
        or tells, counted against the limits (None for a digest, which goes to every coordinator)."""
        now = at or utcnow()
        return add_to_outbox(
            session,
            kind=kind,
            message_pk=message_pk,
            call_id=call.id,
            mailbox=self.settings.mailbox_for_call(call.id),
            sender=call.sender.address,
            recipients=list(mail.recipients),
            to_addr=recipient,
            to_key=recipient_key(recipient) if recipient else None,
            to_domain=domain_of(recipient) if recipient else None,
            message_id=mail.message_id,
            raw=message_bytes(mail, self.settings.smtp),
            state=OutboxState.SUPPRESSED if suppressed else OutboxState.PENDING,
            now=now,
            last_reply=suppressed,
        )
