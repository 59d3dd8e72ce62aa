"""In-process mail servers on loopback: an IMAP server (pymap) and an SMTP sink (aiosmtpd).

They let ``mailbot demo`` and the tests run the real protocol paths on a machine that has no mail
server of its own. Both listen on free ports of 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from argparse import Namespace
from collections.abc import Mapping
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd needs a number before it binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class _LoopbackServer:
    """Start on entering a ``with`` block, stop on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EmbeddedImapServer(_LoopbackServer):
    """A pymap in-memory IMAP server with one account per (user, password) pair."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)
        self.host = LOOPBACK
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-imap", daemon=True)
        self._stack: AsyncExitStack | None = None

    def start(self) -> None:
        self._thread.start()
        ready: Future[int] = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = ready.result(timeout=30)

    async def _start(self) -> int:
        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.backend.dict import DictBackend, Identity
        from pymap.imap import IMAPServer
        from pymap.user import Passwords, UserMetadata

        args = Namespace(
            debug=False,
            inherited_sockets=None,
            host=[LOOPBACK],
            port="0",
            cert=None,
            key=None,
            tls=False,
            proxy_protocol=None,
            demo_data=False,
            demo_user="demouser",
            demo_password="",
            passlib_cfg=None,
            skip_services=[],
        )
        backend, config = await DictBackend.init(args, invalid_user_sleep=0.0)
        config.apply_context()
        passwords = Passwords(config)
        for user, password in self.users.items():
            hashed = await passwords.hash_password(password)
            await Identity(user, backend.login, None, frozenset()).set(UserMetadata(config, user, password=hashed))
        self._stack = AsyncExitStack()
        await backend.start(self._stack)
        handler = ProxyProtocolReader(config.proxy_protocol).get_callback(IMAPServer(backend.login, config))
        server = await asyncio.start_server(handler, host=LOOPBACK, port=0)
        await self._stack.enter_async_context(server)
        self._serving = asyncio.ensure_future(server.serve_forever())
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        self._serving.cancel()
        if self._stack is not None:
            await self._stack.aclose()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw)


@dataclass
class _SinkHandler:
    received: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTPProtocol, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        content: Any = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        with self.lock:
            self.received.append(ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"


class SmtpSink(_LoopbackServer):
    """An SMTP server that keeps every message it accepts (no authentication, loopback only)."""

    def __init__(self) -> None:
        self.handler = _SinkHandler()
        self.host = LOOPBACK
        self.port = free_port()
        self._controller = Controller(self.handler, hostname=LOOPBACK, port=self.port, decode_data=False)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.received)
