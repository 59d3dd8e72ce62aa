"""The mailboxes' Sent folders, as the sender and the effects reach them.

Our own copies of answers are filed there (an effect of recording them sent, see
``mailbot.effects``); where the provider files what it accepts itself (``saves_to_sent``), the
folder is the evidence of whether an interrupted send went out (see ``mailbot.send_recovery``).
"""

from __future__ import annotations

from mailbot.config import Settings
from mailbot.imap import MailboxClient
from mailbot.oauth import Credentials


def mailbox_client(settings: Settings, credentials: Credentials, mailbox_name: str | None) -> MailboxClient | None:
    """A client (not yet connected) of the configured mailbox ``mailbox_name``; None for imported mail."""
    if mailbox_name is None:
        return None
    try:
        box = settings.mailbox_by_name(mailbox_name)
    except KeyError:
        return None
    return MailboxClient(box, credentials.of(box))


class SentFolders:
    """One IMAP connection per mailbox for a whole flush: a fresh login for every copy is slow."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self._open: dict[str, MailboxClient] = {}

    def client(self, mailbox: str | None) -> MailboxClient | None:
        if mailbox is None:
            return None
        if mailbox not in self._open:
            client = mailbox_client(self.settings, self.credentials, mailbox)
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
