"""Settling the answers a stopped worker left in the middle of their SMTP conversation.

``sending``: the end of the message never left, so the server kept nothing: send again.
``committing``: it may have been accepted. Where the provider files what it accepts
(``saves_to_sent``), its Sent folder decides (and the row waits while it cannot be searched);
elsewhere nothing can tell, and a second copy is the worse mistake, so the answer counts as
delivered and the event log says it was presumed. Our own copies in Sent are filed only after an
answer is recorded sent (an effect, ``mailbot.effects``), so they never decide this.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.oauth import Credentials
from mailbot.sent_folder import mailbox_client
from storage import Storage
from storage.db import transaction
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from storage.models import OutboxMail, OutboxState, SendVerdict

log = logging.getLogger(__name__)

ACTOR = "sender"


class InterruptedSends:
    """The verdict on each answer a stopped worker left ``sending`` or ``committing``, and its record."""

    def __init__(self, settings: Settings, store: Storage, credentials: Credentials) -> None:
        self.settings = settings
        self.store = store
        self.credentials = credentials

    def settle(self) -> None:
        """Settle every interrupted send (on a shared database, only those of workers taken for dead)."""
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
            client = mailbox_client(self.settings, self.credentials, mail.mailbox)
            if client is None:
                return None
            with client:
                return client.contains_message_id(client.box.sent_folder, mail.message_id)
        except Exception as exc:  # a lost connection or a missing secret as much as a refused login
            log.warning("cannot look in Sent for %s: %s", mail.message_id, exc)
            return None
