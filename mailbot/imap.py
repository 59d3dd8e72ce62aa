"""A small IMAP client over imapclient: connect securely, read new mail by UID, file it away.

Verification of the server's certificate is on unless the configuration turns it off; plaintext
is used only with ``tls = "none"`` and then with a warning unless the server is on loopback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from mailbot import __version__
from mailbot.clock import ensure_aware
from mailbot.config_accounts import MailboxSettings, is_loopback
from mailbot.diagnose import connection_hint
from mailbot.oauth import Credential, FixedSecret, TokenRefused
from parsers.headers import message_id_in
from storage.failpoints import failpoint

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 120.0
# a large message is fetched in pieces of this size: a whole one costs about three times its size
# in memory while imaplib and imapclient take the response apart
PIECE_BYTES = 4 * 1024 * 1024


class MailboxUnavailable(Exception):
    """The mailbox cannot be reached or refused the login; the message says what to fix."""


class LoginRefused(MailboxUnavailable):
    """The server refused the password or access token offered."""


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class FetchedMail:
    uid: int
    raw: bytes
    internaldate: datetime


@dataclass(frozen=True)
class MailSummary:
    uid: int
    message_id: str | None
    size: int


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS settings of every connection; made once, as loading the system's CA list takes ~20 ms."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def warn_if_plaintext(kind: str, name: str, host: str, tls: str) -> None:
    if tls == "none" and not is_loopback(host):
        log.warning(
            "%s %s talks to %s without TLS: passwords and mail cross the network in clear text",
            kind,
            name,
            host,
            extra={"mailbox": name},
        )


def _server_text(exc: IMAPClientError) -> str:
    """The server's reply: imapclient passes it on as the repr of its bytes (``b'[AUTH...] ...'``)."""
    text = str(exc)
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text, re.DOTALL)
    return quoted.group(2) if quoted else text


class MailboxClient:
    """One logged-in IMAP connection for one configured mailbox."""

    def __init__(self, box: MailboxSettings, secret: str | Credential, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.box = box
        self._credential = FixedSecret(secret) if isinstance(secret, str) else secret
        self._timeout = timeout_s
        self._client: imapclient.IMAPClient | None = None
        self._folders_seen: set[str] = set()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def client(self) -> imapclient.IMAPClient:
        if self._client is None:
            raise MailboxUnavailable(f"mailbox {self.box.name} is not connected")
        return self._client

    def connect(self) -> None:
        box = self.box
        warn_if_plaintext("mailbox", box.name, box.host, box.tls)
        try:
            secret = self._credential.secret()
            try:
                client = self._logged_in(secret)
            except LoginRefused:
                # a provider may revoke an access token before it expires: one renewed token, one more try
                renewed = self._credential.renew(secret)
                if renewed is None:
                    raise
                log.info("mailbox %s refused the access token: trying once with a renewed one", box.name)
                client = self._logged_in(renewed)
        except TokenRefused as exc:
            raise MailboxUnavailable(f"mailbox {box.name}: {exc}") from None
        self._client = client
        self._folders_seen = set()

    def _logged_in(self, secret: str) -> imapclient.IMAPClient:
        """A new connection, logged in with ``secret``."""
        box = self.box
        context = tls_context(box.verify_certificate) if box.tls != "none" else None
        client: imapclient.IMAPClient | None = None
        try:
            client = imapclient.IMAPClient(
                box.host,
                port=box.port,
                ssl=box.tls == "ssl",
                ssl_context=context if box.tls == "ssl" else None,
                timeout=self._timeout,
            )
            if box.tls == "starttls" and context is not None:
                client.starttls(context)
            # keep INTERNALDATE's own zone: imapclient otherwise converts to naive local time
            client.normalise_times = False
            if box.send_id and client.has_capability("ID"):
                # NetEase and Coremail servers refuse SELECT from clients that do not say who they are
                client.id_({"name": "mailbot", "version": __version__})
            if box.auth == "xoauth2":
                client.oauth2_login(box.user, secret)
            else:
                client.login(box.user, secret)
        except (TimeoutError, OSError, IMAPClientError) as exc:
            # close at once: the traceback keeps the client alive, so the server would otherwise
            # see the connection (and count it against the account) until a garbage collection
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown()
            hint = connection_hint(exc, box.host, box.port)
            if hint is not None:
                raise MailboxUnavailable(f"mailbox {box.name}: {hint}") from None
            if isinstance(exc, IMAPClientError):
                # only the answer to the credentials themselves is worth a renewed token
                refusal = LoginRefused if isinstance(exc, LoginError) else MailboxUnavailable
                raise refusal(
                    f"mailbox {box.name}: the server refused the login as {box.user}: {_server_text(exc)}"
                ) from None
            raise MailboxUnavailable(
                f"mailbox {box.name}: cannot connect to {box.host}:{box.port} ({exc.__class__.__name__}: {exc})"
            ) from None
        return client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (OSError, IMAPClientError):
            client.shutdown()

    def select(self, folder: str) -> FolderState:
        failpoint("imap.select")
        info = self.client.select_folder(folder)
        return FolderState(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def uids_after(self, last_uid: int) -> list[int]:
        # "N:*" always matches the newest message even when its UID is below N
        failpoint("imap.search")
        found = self.client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in found if uid > last_uid)

    def summaries(self, uids: Sequence[int]) -> list[MailSummary]:
        if not uids:
            return []
        failpoint("imap.fetch.summaries")
        response = self.client.fetch(list(uids), ["RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out = []
        for uid in uids:
            data = response.get(uid)
            if data is None:  # expunged meanwhile
                continue
            header = data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"") or b""
            out.append(MailSummary(uid, message_id_in(header), int(data.get(b"RFC822.SIZE", 0))))
        return out

    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMail]:
        if not uids:
            return
        failpoint("imap.fetch.bodies")
        response = self.client.fetch(list(uids), ["BODY.PEEK[]", "INTERNALDATE"])
        for uid in uids:
            data = response.get(uid)
            if data is None or data.get(b"BODY[]") is None:
                # expunged by another client: nothing comes back, or (Dovecot) a NIL body
                continue
            yield FetchedMail(uid, bytes(data[b"BODY[]"]), ensure_aware(data[b"INTERNALDATE"]))

    def fetch_in_pieces(self, uid: int) -> tuple[datetime, Iterator[bytes]] | None:
        """A message's arrival time and its bytes in pieces (partial FETCH, RFC 3501 section 6.4.5).

        None if the message is gone. The pieces must be consumed before the next command.
        """
        piece = PIECE_BYTES
        failpoint("imap.fetch.piece")
        first = self.client.fetch([uid], ["INTERNALDATE"]).get(uid)
        if first is None:
            return None

        def pieces() -> Iterator[bytes]:
            offset = 0
            while True:
                failpoint("imap.fetch.piece")
                data = self.client.fetch([uid], [f"BODY.PEEK[]<{offset}.{piece}>"]).get(uid, {})
                chunk = next((bytes(v) for k, v in data.items() if k.startswith(b"BODY[]<") and v), b"")
                if chunk:
                    yield chunk
                if len(chunk) < piece:
                    return
                offset += len(chunk)

        return ensure_aware(first[b"INTERNALDATE"]), pieces()

    def ensure_folder(self, folder: str) -> None:
        # asked once per connection: a copy in Sent for every answer would otherwise ask every time
        if folder in self._folders_seen:
            return
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
        self._folders_seen.add(folder)

    def move(self, uids: Iterable[int], folder: str) -> None:
        uid_list = list(uids)
        if not uid_list:
            return
        self.ensure_folder(folder)
        if self.client.has_capability("MOVE"):
            failpoint("imap.move")
            self.client.move(uid_list, folder)
            return
        failpoint("imap.copy")
        self.client.copy(uid_list, folder)
        self.client.delete_messages(uid_list)
        failpoint("imap.expunge")
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uid_list)
        else:
            self.client.expunge()

    def append(self, folder: str, raw: bytes, when: datetime, flags: Sequence[bytes] = (rb"\Seen",)) -> None:
        self.append_all(folder, [raw], when, flags)

    def append_all(
        self, folder: str, raws: Sequence[bytes], when: datetime, flags: Sequence[bytes] = (rb"\Seen",)
    ) -> None:
        """Add ``raws`` to ``folder``: in one command where the server has MULTIAPPEND (RFC 3502)."""
        self.ensure_folder(folder)
        failpoint("imap.append")
        if len(raws) > 1 and self.client.has_capability("MULTIAPPEND"):
            self.client.multiappend(folder, [{"msg": raw, "flags": list(flags), "date": when} for raw in raws])
            return
        for raw in raws:
            self.client.append(folder, raw, flags=list(flags), msg_time=when)

    def move_message_id(self, folders: Sequence[str], message_id: str, target: str) -> bool:
        """Move the message with this Message-ID from the first of ``folders`` that has it."""
        for folder in folders:
            if not self.client.folder_exists(folder):
                continue
            failpoint("imap.select")
            self.client.select_folder(folder)
            failpoint("imap.search.message_id")
            uids = self.client.search(["HEADER", "Message-ID", message_id])
            if uids:
                self.move(uids, target)
                return True
        return False

    def contains_message_id(self, folder: str, message_id: str) -> bool:
        """Whether ``folder`` holds a message with this Message-ID header."""
        if not self.client.folder_exists(folder):
            return False
        failpoint("imap.select")
        self.client.select_folder(folder, readonly=True)
        failpoint("imap.search.message_id")
        return bool(self.client.search(["HEADER", "Message-ID", message_id]))

    def idle_until_news(self, timeout_s: float) -> bool:
        """Wait with IDLE for up to ``timeout_s``; True if the server announced something."""
        client = self.client
        client.idle()
        try:
            responses: list[Any] = client.idle_check(timeout=timeout_s)
        finally:
            client.idle_done()
        return any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    @property
    def supports_idle(self) -> bool:
        return bool(self.client.has_capability("IDLE"))
