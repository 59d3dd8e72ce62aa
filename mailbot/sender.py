"""The sending round: delivers the outbox over SMTP, at most once per acknowledgement.

A row is claimed as ``sending``, marked ``committing`` (committed) just before the final line of
its data goes out, and recorded ``sent`` with the server's reply, together with the rest of its
batch; filing the batch's copies in Sent is an effect of that record (``mailbot.effects``), run
straight after its commit. After a stop, a ``sending`` row never reached the server and is sent
again; a ``committing`` row may have (``mailbot.send_recovery``). The SMTP conversation itself is
``mailbot.smtp``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.effect_runner import FIRST_RETRY, EffectRunner, retry_delay
from mailbot.effects import add_sent_copy_effects
from mailbot.metrics import StageTimings
from mailbot.oauth import Credentials, record_token_states
from mailbot.send_recovery import InterruptedSends
from mailbot.sent_folder import SentFolders
from mailbot.smtp import LoginRefused, PermanentFailure, SmtpTransport, TemporaryFailure
from storage import Storage
from storage.db import transaction
from storage.effects import DueEffect
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from storage.models import OutboxState
from storage.queues import ClaimedAnswer

log = logging.getLogger(__name__)

ACTOR = "sender"
# how long connections may sit unused between flushes and still be trusted with the next answer
REUSE_CONNECTIONS_S = 10.0


@dataclass(frozen=True)
class SendResult:
    outbox_id: int
    state: str
    reply: str


@dataclass(frozen=True)
class Accepted:
    """An answer the SMTP server took, whose outcome is recorded with the rest of its batch."""

    outbox_id: int
    reply: str
    mailbox: str | None
    message_id: str


class TakenOver(Exception):
    """Another worker took the answer for abandoned and sends it: this one must not."""


class Sender:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        worker: str,
        timings: StageTimings | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        # shared with the intake runners where a Worker runs: one access token per refresh token
        self.credentials = credentials or Credentials(settings, record_token_states(store))
        self.timings = timings or StageTimings()
        self._quiet_until: datetime | None = None
        # answers whose hand-over could not be recorded: the database may say "committing", but
        # their end never went out
        self._ends_not_sent: set[int] = set()
        # answers the server accepted while the database could not record it: the reply, by row
        self._accepted_unrecorded: dict[int, str] = {}
        self._transport: SmtpTransport | None = None
        # runs the Sent copies of each batch after its record, over IMAP sessions kept like the SMTP one
        self.effects = EffectRunner(settings, store, worker, credentials=self.credentials)
        self.interrupted = InterruptedSends(settings, store, self.credentials)
        self._last_flush = float("-inf")

    def flush(self, limit: int | None = None, keep_connections: bool = False) -> list[SendResult]:
        """Send every due outbox row (at most ``limit``); returns what happened to each.

        With ``keep_connections`` the SMTP and IMAP sessions stay open for the next flush if this
        one had work (during a rush a fresh login for every few answers costs more than sending
        them); they are closed when a flush finds nothing to do or comes after a long pause.
        """
        if self._quiet_until is not None and utcnow() < self._quiet_until:
            return []  # the server refused our login a moment ago: asking again now only adds refusals
        if time.monotonic() - self._last_flush > REUSE_CONNECTIONS_S:
            self.close()  # a server may have dropped a connection left idle that long
        self.interrupted.settle()
        results: list[SendResult] = []
        transport = self._transport = self._transport or SmtpTransport(self.settings, self.credentials)
        folders = self.effects.sent_folders
        keep = False
        try:
            while limit is None or len(results) < limit:
                ids = self.store.to_send.claim(self.worker, 20 if limit is None else min(20, limit - len(results)))
                if not ids:
                    break
                results.extend(self._deliver_claimed(transport, folders, ids))
                if transport.login_refused:
                    self.give_back()  # the rest of this round's rows never started
                    self._quiet_until = utcnow() + FIRST_RETRY
                    return results
            keep = keep_connections and bool(results)
        finally:
            self._last_flush = time.monotonic()
            if not keep:
                self.close()
        return results

    def close(self) -> None:
        """Log out of the SMTP and IMAP sessions kept open between flushes."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self.effects.close()

    def _deliver_claimed(self, transport: SmtpTransport, folders: SentFolders, ids: list[int]) -> list[SendResult]:
        """Send claimed answers one by one, then record the accepted ones together and file them in Sent.

        Each answer's hand-over is committed before its end goes out (``_handing_over``); recording
        the server's reply can wait for the batch, because a row a stop leaves in ``committing``
        after the server accepted it is settled as delivered (found in the provider's Sent folder,
        or presumed), never sent again. One transaction and one Sent command for the batch, rather
        than two of each per answer; the Sent command runs after the transaction has committed.
        """
        outcomes: dict[int, SendResult] = {}
        accepted: list[Accepted] = []
        oldest = 0.0
        answers = self.store.to_send.claimed_answers(ids)
        for outbox_id in ids:
            outcome = self._deliver(transport, folders, outbox_id, answers[outbox_id])
            if isinstance(outcome, Accepted):
                oldest = oldest if accepted else time.monotonic()
                accepted.append(outcome)
                self._accepted_unrecorded[outbox_id] = outcome.reply
            elif outcome is not None:
                outcomes[outbox_id] = outcome
            if transport.login_refused:
                break
            if accepted and time.monotonic() - oldest > self.settings.smtp.timeout_s:
                # a slow server: record before another worker could take a waiting row for abandoned
                outcomes.update(self._record_accepted(accepted))
                accepted = []
        if accepted:
            outcomes.update(self._record_accepted(accepted))
        return [outcomes[outbox_id] for outbox_id in ids if outbox_id in outcomes]

    def _record_accepted(self, accepted: list[Accepted]) -> dict[int, SendResult]:
        """Record a batch sent, and file its copies in Sent straight after (an effect of the record)."""
        filing: list[DueEffect] = []
        with transaction(self.store.sessions) as session:
            results = {
                answer.outbox_id: self._mark(session, answer.outbox_id, OutboxState.SENT, answer.reply)
                for answer in accepted
            }
            sent = [(answer.outbox_id, answer.mailbox, answer.message_id) for answer in accepted]
            filing = add_sent_copy_effects(session, self.settings, sent, self.worker)
            failpoint("outbox.sent")
        for answer in accepted:
            del self._accepted_unrecorded[answer.outbox_id]
        if filing:
            self.effects.run_claimed(filing)
        return results

    def _deliver(
        self, transport: SmtpTransport, folders: SentFolders, outbox_id: int, answer: ClaimedAnswer
    ) -> SendResult | Accepted | None:
        """Send one claimed answer: Accepted by the server, a failure recorded, or None if taken over."""
        # only another worker can take an answer over, and only on a database several share
        if self.store.concurrent and not self.store.to_send.start_conversation(outbox_id, self.worker):
            log.warning("answer %d was taken over by another worker: not sending it", outbox_id)
            return None
        message_id, attempts = answer.message_id, answer.attempts
        extra = {"message_id": message_id}
        try:
            if attempts > 1 and self._earlier_attempt_filed(folders, answer.mailbox, message_id):
                log.info("%s is in the Sent folder already: not sending it again", message_id, extra=extra)
                return self._finish(
                    outbox_id, OutboxState.SENT, "found in the Sent folder: an earlier attempt went out"
                )
            with self.timings.stage("send"):
                reply = transport.send(
                    answer.sender, answer.recipients, answer.raw, lambda: self._handing_over(outbox_id)
                )
        except TakenOver as exc:
            log.warning("%s: the end of the answer was not sent", exc, extra=extra)
            return None
        except PermanentFailure as exc:
            log.error("SMTP refused %s for good: %s", message_id, exc, extra=extra)
            return self._finish(outbox_id, OutboxState.FAILED, str(exc))
        except LoginRefused as exc:
            transport.login_refused = True
            log.error("%s; answers wait until it is fixed", exc, extra=extra)
            return self._finish(outbox_id, OutboxState.PENDING, str(exc), next_attempt=utcnow() + FIRST_RETRY)
        except TemporaryFailure as exc:
            give_up_at = answer.created_at + timedelta(hours=self.settings.smtp.retry_for_hours)
            next_at = utcnow() + retry_delay(attempts)
            if next_at > give_up_at:
                log.error("giving up on %s after %d attempts: %s", message_id, attempts, exc, extra=extra)
                return self._finish(outbox_id, OutboxState.FAILED, f"retries exhausted: {exc}")
            log.warning(
                "SMTP not available for %s (%s); retrying at %s",
                message_id,
                exc,
                next_at.isoformat(),
                extra=extra,
            )
            return self._finish(outbox_id, OutboxState.PENDING, str(exc), next_attempt=next_at)
        log.info("sent %s to %s", message_id, ", ".join(answer.recipients), extra=extra)
        return Accepted(outbox_id, reply, answer.mailbox, message_id)

    def _handing_over(self, outbox_id: int) -> None:
        """Record that the end of the message goes out now: from here on the server may accept it."""
        try:
            with transaction(self.store.sessions) as session:
                marked = self.store.to_send.mark_handing_over(session, outbox_id, self.worker)
                failpoint("outbox.committing")
                if marked:
                    return
        except Exception:
            # a lost connection leaves it unknown whether the mark committed; the end stays unsent
            self._ends_not_sent.add(outbox_id)
            raise
        raise TakenOver(f"answer {outbox_id} was taken over by another worker")

    def give_back(self) -> int:
        """After a failed flush, settle what this worker knows of its answers; returns how many.

        The ones it never sent the end of are queued again; the ones the server accepted while
        the database was away are recorded as sent (rather than left for a recovery that could
        only presume it).
        """
        settled = self.store.to_send.release_claims_of(self.worker, self._ends_not_sent)
        self._ends_not_sent.clear()
        for outbox_id, reply in list(self._accepted_unrecorded.items()):
            self._finish(outbox_id, OutboxState.SENT, reply)
            del self._accepted_unrecorded[outbox_id]
            settled += 1
        return settled

    def _finish(
        self, outbox_id: int, state: OutboxState, reply: str, next_attempt: datetime | None = None
    ) -> SendResult:
        with transaction(self.store.sessions) as session:
            result = self._mark(session, outbox_id, state, reply, next_attempt=next_attempt)
            failpoint("outbox.finish")
            return result

    def _mark(
        self,
        session: Session,
        outbox_id: int,
        state: OutboxState,
        reply: str,
        next_attempt: datetime | None = None,
    ) -> SendResult:
        sent_at = utcnow() if state == OutboxState.SENT else None
        message_pk, message_id = self.store.to_send.record_outcome(
            session, outbox_id, state, reply[:2000], sent_at=sent_at, next_attempt_at=next_attempt
        )
        add_event(
            session,
            EventKind.of_outbox_state(state),
            ACTOR,
            message_pk,
            outbox_id=outbox_id,
            message_id=message_id,
            reply=reply[:500],
        )
        return SendResult(outbox_id, state.value, reply)

    # --- the Sent folder ----------------------------------------------------------------------

    def _earlier_attempt_filed(self, folders: SentFolders, mailbox: str | None, message_id: str) -> bool:
        """Whether a provider that files submitted mail has a copy from an earlier attempt.

        A connection lost after the message went out but before the server's reply leaves the
        attempt undecided; where the provider files what it accepted, its Sent folder decides.
        """
        if not self.settings.smtp.saves_to_sent:
            return False  # our own copy is filed only after a success, so there is nothing to find
        try:
            client = folders.client(mailbox)
            return client is not None and client.contains_message_id(client.box.sent_folder, message_id)
        except Exception as exc:
            folders.drop(mailbox)
            raise TemporaryFailure(f"cannot look in Sent before sending again: {exc}") from None
