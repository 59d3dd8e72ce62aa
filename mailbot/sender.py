"""The sender: delivers the outbox over SMTP, at most once per acknowledgement.

A row is claimed as ``sending``, marked ``committing`` (committed) just before the final line of
its data goes out, and recorded ``sent`` with the server's reply, together with the rest of its
batch once their copies are filed in Sent. After a stop, a ``sending`` row never reached the
server and is sent again; a ``committing`` row may have: the mailbox's Sent folder decides where
the provider files what it accepts, and elsewhere it counts as delivered, since a second copy is
the worse mistake.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from mailbot.clock import utcnow
from mailbot.config import ConfigError, Settings
from mailbot.imap import MailboxClient, tls_context, warn_if_plaintext
from mailbot.metrics import StageTimings
from mailbot.oauth import Credential, Credentials, TokenRefused, record_token_states
from storage import Storage
from storage.db import transaction
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from storage.models import OUTBOX, OutboxMail, OutboxState, SendVerdict

log = logging.getLogger(__name__)

ACTOR = "sender"
DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
# how long connections may sit unused between flushes and still be trusted with the next answer
REUSE_CONNECTIONS_S = 10.0

# An answer's statements, built once and given their values when executed (building them cost
# more than running them); rows are named by ``row_id``, as a bound name may not be a column's.
_SELECT_CLAIMED = select(
    OUTBOX.c.id,
    OUTBOX.c.sender,
    OUTBOX.c.recipients,
    OUTBOX.c.raw,
    OUTBOX.c.message_id,
    OUTBOX.c.created_at,
    OUTBOX.c.attempts,
    OUTBOX.c.mailbox,
).where(OUTBOX.c.id.in_(bindparam("row_ids", expanding=True)))
_MARK_HANDING_OVER = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("row_id"),
        OUTBOX.c.state == OutboxState.SENDING,
        OUTBOX.c.claimed_by == bindparam("worker"),
    )
    .values(state=OutboxState.COMMITTING)
)
# the columns set are the ones given at execution
_RECORD_OUTCOME = (
    update(OUTBOX).where(OUTBOX.c.id == bindparam("row_id")).returning(OUTBOX.c.message_pk, OUTBOX.c.message_id)
)


@dataclass(frozen=True)
class SendResult:
    outbox_id: int
    state: str
    reply: str


@dataclass(frozen=True)
class ClaimedAnswer:
    """What sending needs of an answer this worker claimed."""

    sender: str
    recipients: list[str]
    raw: bytes
    message_id: str
    created_at: datetime
    attempts: int
    mailbox: str | None


@dataclass(frozen=True)
class Accepted:
    """An answer the SMTP server took, whose outcome is recorded with the rest of its batch."""

    outbox_id: int
    reply: str
    mailbox: str | None
    raw: bytes


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class TakenOver(Exception):
    """Another worker took the answer for abandoned and sends it: this one must not."""


class LoginRefused(TemporaryFailure):
    """No answer can go out until the SMTP credentials are fixed: stop the round, keep the rows."""


def retry_delay(attempts: int) -> timedelta:
    delay: timedelta = FIRST_RETRY * (2 ** min(max(attempts - 1, 0), 10))
    return min(delay, MAX_RETRY)


def connect_smtp(
    settings: Settings, timeout_s: float | None = None, credentials: Credentials | None = None
) -> smtplib.SMTP:
    """A connected, logged-in SMTP session as ``[smtp]`` describes it (certificates verified)."""
    cfg = settings.smtp
    timeout = timeout_s or cfg.timeout_s
    warn_if_plaintext("smtp", "server", cfg.host, cfg.tls)
    smtp: smtplib.SMTP
    if cfg.tls == "ssl":
        smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=timeout, context=tls_context(cfg.verify_certificate))
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        if cfg.tls == "starttls":
            smtp.starttls(context=tls_context(cfg.verify_certificate))
    if smtp.sock is not None:
        # the final line goes out as its own small write: without this, Nagle's algorithm holds
        # it until the server acknowledges the body (tens of milliseconds per message)
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cfg.user and (cfg.password_env or cfg.oauth):
        try:
            credential = (credentials or Credentials(settings)).of(cfg)
            if cfg.auth == "xoauth2":
                _xoauth2_login(smtp, cfg.user, credential)
            else:
                smtp.login(cfg.user, credential.secret())
        except (smtplib.SMTPAuthenticationError, ConfigError, TokenRefused):
            smtp.close()
            raise
    return smtp


def _xoauth2_login(smtp: smtplib.SMTP, user: str, credential: Credential) -> None:
    """AUTH XOAUTH2; a refused access token is renewed once and offered again on the same connection."""

    def offer(token: str) -> None:
        answer = f"user={user}\x01auth=Bearer {token}\x01\x01"
        # a refusal comes as a challenge carrying the server's reason: the client answers it empty
        smtp.auth("XOAUTH2", lambda challenge=None: answer if challenge is None else "")

    # unlike login(), auth() does not say EHLO first, and takes the "503 send HELO first" that
    # follows for "already authenticated": every send would then be refused for want of a login
    smtp.ehlo_or_helo_if_needed()
    token = credential.secret()
    try:
        offer(token)
    except smtplib.SMTPAuthenticationError:
        renewed = credential.renew(token)
        if renewed is None:
            raise
        log.info("the SMTP server refused the access token: trying once with a renewed one")
        offer(renewed)


class SmtpTransport:
    """One SMTP connection per flush, opened lazily and reused for every message in it."""

    def __init__(self, settings: Settings, credentials: Credentials | None = None) -> None:
        self.settings = settings
        self.credentials = credentials or Credentials(settings)
        self._smtp: smtplib.SMTP | None = None
        self.login_refused = False

    def send(self, sender: str, recipients: list[str], raw: bytes, before_end: Callable[[], None]) -> str:
        """Send one message; ``before_end`` runs just before the end of the data is handed over.

        Until the final "." the server keeps nothing (a broken connection aborts the transaction);
        from it on, the server may have accepted the message even if its reply never arrives.
        """
        try:
            if self._smtp is None:
                self._smtp = connect_smtp(self.settings, credentials=self.credentials)
            refused = self._transaction(self._smtp, sender, recipients, raw, before_end)
        except (smtplib.SMTPAuthenticationError, ConfigError) as exc:
            # a wrong or rotated password is the operator's to fix, not the answer's fault
            self.close()
            raise LoginRefused(f"the SMTP server refused the login: {exc}") from None
        except TokenRefused as exc:
            self.close()
            raise LoginRefused(f"SMTP: {exc}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(
                f"{rcpt}: {code} {msg.decode(errors='replace')}" for rcpt, (code, msg) in exc.recipients.items()
            )
            if all(code >= 500 for code in codes):
                raise PermanentFailure(detail) from None
            raise TemporaryFailure(detail) from None
        except smtplib.SMTPResponseException as exc:
            self.close()
            error = exc.smtp_error
            text = f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
            if exc.smtp_code >= 500:
                raise PermanentFailure(text) from None
            raise TemporaryFailure(text) from None
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self.close()
            raise TemporaryFailure(f"{exc.__class__.__name__}: {exc}") from None
        except BaseException:
            # ``before_end`` failed (the database went away): in the middle of the data a QUIT would
            # be read as more of the message and wait out the timeout; the server drops the rest
            self._abandon()
            raise
        if refused:
            return "accepted except " + ", ".join(refused)
        return "250 accepted"

    @staticmethod
    def _transaction(
        smtp: smtplib.SMTP, sender: str, recipients: list[str], raw: bytes, before_end: Callable[[], None]
    ) -> dict[str, tuple[int, bytes]]:
        """smtplib's sendmail, with the DATA phase split before its final line."""
        smtp.ehlo_or_helo_if_needed()
        failpoint("smtp.mail")
        code, reply = smtp.mail(sender)
        if code != 250:
            smtp.rset()
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            failpoint("smtp.rcpt")
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            smtp.rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        failpoint("smtp.data")
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            smtp.rset()
            raise smtplib.SMTPDataError(code, reply)
        body = DOT_AT_LINE_START.sub(b"..", raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        smtp.send(body)
        before_end()
        failpoint("smtp.final")
        smtp.send(b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return refused

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _abandon(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


class SentFolders:
    """One IMAP connection per mailbox for a whole flush: a fresh login for every copy is slow."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._open: dict[str, MailboxClient] = {}

    def client(self, mailbox: str | None) -> MailboxClient | None:
        if mailbox is None:
            return None
        if mailbox not in self._open:
            client = self._sender.mailbox_client(mailbox)
            if client is None:
                return None
            client.connect()
            self._open[mailbox] = client
        return self._open[mailbox]

    def drop(self, mailbox: str | None) -> None:
        client = self._open.pop(mailbox or "", None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for name in list(self._open):
            self.drop(name)


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
        # shared with the intake threads where a Bot runs: one access token per refresh token
        self.credentials = credentials or Credentials(settings, record_token_states(store))
        self.timings = timings or StageTimings()
        self._quiet_until: datetime | None = None
        # answers whose hand-over could not be recorded: the database may say "committing", but
        # their end never went out
        self._ends_not_sent: set[int] = set()
        # answers the server accepted while the database could not record it: the reply, by row
        self._accepted_unrecorded: dict[int, str] = {}
        self._transport: SmtpTransport | None = None
        self._folders: SentFolders | None = None
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
        self.recover_interrupted()
        results: list[SendResult] = []
        transport = self._transport = self._transport or SmtpTransport(self.settings, self.credentials)
        folders = self._folders = self._folders or SentFolders(self)
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
        folders, self._folders = self._folders, None
        if transport is not None:
            transport.close()
        if folders is not None:
            folders.close()

    def _deliver_claimed(self, transport: SmtpTransport, folders: SentFolders, ids: list[int]) -> list[SendResult]:
        """Send claimed answers one by one, then file the accepted ones in Sent and record them together.

        Each answer's hand-over is committed before its end goes out (``_handing_over``); recording
        the server's reply can wait for the batch, because a row left in ``committing`` by a stop
        counts as delivered, never as one to send again. One transaction and one Sent command
        for the batch, rather than two of each per answer.
        """
        outcomes: dict[int, SendResult] = {}
        accepted: list[Accepted] = []
        oldest = 0.0
        answers = self._claimed_answers(ids)
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
                outcomes.update(self._record_accepted(folders, accepted))
                accepted = []
        if accepted:
            outcomes.update(self._record_accepted(folders, accepted))
        return [outcomes[outbox_id] for outbox_id in ids if outbox_id in outcomes]

    def _claimed_answers(self, ids: list[int]) -> dict[int, ClaimedAnswer]:
        """What sending needs of each claimed answer, read in one query for the batch."""
        with self.store.sessions() as session:
            rows = session.execute(_SELECT_CLAIMED, {"row_ids": ids})
            return {row.id: ClaimedAnswer(*row[1:]) for row in rows}

    def _record_accepted(self, folders: SentFolders, accepted: list[Accepted]) -> dict[int, SendResult]:
        # filed before recorded: should the worker stop in between, the copy in Sent is what tells
        # the restarted one that these answers went out
        filed = self._file_in_sent(folders, accepted)
        with transaction(self.store.sessions) as session:
            results = {
                answer.outbox_id: self._mark(
                    session, answer.outbox_id, OutboxState.SENT, answer.reply, filed_in_sent=answer.outbox_id in filed
                )
                for answer in accepted
            }
            failpoint("outbox.sent")
        for answer in accepted:
            del self._accepted_unrecorded[answer.outbox_id]
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
        return Accepted(outbox_id, reply, answer.mailbox, answer.raw)

    def _handing_over(self, outbox_id: int) -> None:
        """Record that the end of the message goes out now: from here on the server may accept it."""
        try:
            with transaction(self.store.sessions) as session:
                marked = session.execute(_MARK_HANDING_OVER, {"row_id": outbox_id, "worker": self.worker})
                failpoint("outbox.committing")
                if getattr(marked, "rowcount", 0) == 1:
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
        filed_in_sent: bool = False,
    ) -> SendResult:
        changes: dict[str, object] = {"state": state, "last_reply": reply[:2000], "claimed_by": None}
        if filed_in_sent:
            changes["filed_in_sent"] = True
        if state == OutboxState.SENT:
            changes["sent_at"] = utcnow()
        if next_attempt is not None:
            changes["next_attempt_at"] = next_attempt
        message_pk, message_id = session.execute(_RECORD_OUTCOME, {"row_id": outbox_id, **changes}).one()
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

    def mailbox_client(self, mailbox_name: str | None) -> MailboxClient | None:
        if mailbox_name is None:
            return None
        try:
            box = self.settings.mailbox_by_name(mailbox_name)
        except KeyError:
            return None
        return MailboxClient(box, self.credentials.of(box))

    def _file_in_sent(self, folders: SentFolders, accepted: list[Accepted]) -> set[int]:
        """File copies in each mailbox's Sent folder, as a mail client would, so the office sees them.

        Returns the rows filed. Filing is a courtesy: a failure is logged and the sends stand.
        """
        if self.settings.smtp.saves_to_sent:
            return set()
        by_mailbox: dict[str | None, list[Accepted]] = {}
        for answer in accepted:
            by_mailbox.setdefault(answer.mailbox, []).append(answer)
        filed: set[int] = set()
        for mailbox, answers in by_mailbox.items():
            try:
                client = folders.client(mailbox)
                if client is None:
                    continue
                client.append_all(client.box.sent_folder, [answer.raw for answer in answers], utcnow())
            except Exception as exc:
                folders.drop(mailbox)
                log.warning("could not file %d answer(s) in Sent of %s: %s", len(answers), mailbox, exc)
                continue
            filed.update(answer.outbox_id for answer in answers)
        return filed

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

    def _verdict(self, outbox_id: int, state: str) -> SendVerdict | None:
        if state == OutboxState.SENDING:
            return SendVerdict.AGAIN
        with self.store.sessions() as session:
            found = self.in_sent_folder(session.get_one(OutboxMail, outbox_id))
        if found:
            return SendVerdict.FOUND
        if self.settings.smtp.saves_to_sent:
            return None if found is None else SendVerdict.AGAIN
        return SendVerdict.PRESUMED

    def in_sent_folder(self, mail: OutboxMail) -> bool | None:
        """True/False if the Sent folder answers; None if it cannot be asked."""
        try:
            client = self.mailbox_client(mail.mailbox)
            if client is None:
                return None
            with client:
                return client.contains_message_id(client.box.sent_folder, mail.message_id)
        except Exception as exc:  # a lost connection or a missing secret as much as a refused login
            log.warning("cannot look in Sent for %s: %s", mail.message_id, exc)
            return None

    def recover_interrupted(self) -> None:
        """Settle rows a stopped worker left mid-conversation.

        ``sending``: the end of the message never left, so the server kept nothing: send again.
        ``committing``: it may have been accepted. Where the provider files what it accepts, the
        Sent folder decides (and the row waits while it cannot be searched); elsewhere nothing
        can tell, and a second copy is the worse mistake, so the answer counts as delivered and
        the event log says it was presumed.
        """
        stale = None if not self.store.concurrent else timedelta(seconds=self.settings.smtp.timeout_s * 3)
        for outbox_id, state in self.store.to_send.interrupted_sends(stale):
            verdict = self._verdict(outbox_id, state)
            if verdict is None:
                continue  # ask the Sent folder again next time rather than risk a second copy
            with transaction(self.store.sessions) as session:
                mail = session.get_one(OutboxMail, outbox_id, with_for_update=True)
                if mail.state != state:
                    continue
                if verdict == SendVerdict.AGAIN:
                    mail.state = OutboxState.PENDING
                    mail.next_attempt_at = utcnow()
                else:
                    mail.state = OutboxState.SENT
                    mail.sent_at = mail.sent_at or utcnow()
                    mail.filed_in_sent = verdict == SendVerdict.FOUND
                    mail.last_reply = (
                        "found in the Sent folder after an interruption"
                        if verdict == SendVerdict.FOUND
                        else "presumed delivered: interrupted while the server took the end of the message"
                    )
                add_event(
                    session,
                    EventKind.OUTBOX_RECOVERED,
                    ACTOR,
                    mail.message_pk,
                    outbox_id=outbox_id,
                    verdict=verdict.value,
                )
                failpoint("outbox.recover")
            log.info("interrupted send %s (%s): %s", outbox_id, state, verdict)
