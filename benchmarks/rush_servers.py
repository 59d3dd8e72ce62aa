"""The rush's servers: a throw-away Dovecot the load is appended to and an SMTP sink that notes
when each answer arrived; the bot's configuration for them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import imapclient
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from benchmarks.rush_load import Planned, header_of
from mailbot.demo import local_config
from mailbot.embedded import SmtpSink
from tests.support.dovecot import DovecotServer

PASSWORD_ENV = "MAILBOT_RUSH_PASSWORD"
PASSWORD = "rush-password-51f0"  # a throw-away account on a loopback-only server


class TimedSink(SmtpSink):
    """The SMTP sink, also noting when each answer arrived, by the Message-ID it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}
        keep = self.handler.handle_DATA

        async def handle_data(server: SMTPProtocol, session: SmtpSession, envelope: SmtpEnvelope) -> str:
            reply = await keep(server, session, envelope)
            content = envelope.original_content or envelope.content or b""
            raw = content if isinstance(content, bytes) else str(content).encode()
            self.arrived.setdefault(header_of(raw, "In-Reply-To"), time.time())
            return reply

        self.handler.handle_DATA = handle_data  # type: ignore[method-assign]


def rush_config(data_dir: Path, dovecot: DovecotServer, sink: SmtpSink, workers: int, idle: bool) -> dict[str, Any]:
    return local_config(
        data_dir,
        (dovecot.host, dovecot.port),
        (sink.host, sink.port),
        PASSWORD_ENV,
        processing={"workers": workers},
        mailbox={"idle": idle, "poll_interval_s": 1.0},
        # a rush of thousands within the hour measures throughput: the answer caps must not hold it back
        security=RUSH_CAPS,
    )


RUSH_CAPS = {
    "max_answers_per_hour": 1_000_000,
    "max_answers_per_day": 1_000_000,
    "max_answers_per_domain_per_day": 1_000_000,
}


def append_all(dovecot: DovecotServer, load: Sequence[Planned], label: str) -> dict[str, float]:
    """Plain APPENDs, one connection per account; returns when each Message-ID was in the mailbox."""
    clients: dict[str, imapclient.IMAPClient] = {}
    appended: dict[str, float] = {}
    step = max(1, len(load) // 10)
    try:
        for index, planned in enumerate(load, 1):
            client = clients.get(planned.user)
            if client is None:
                client = clients[planned.user] = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False)
                client.login(planned.user, PASSWORD)
            client.append("INBOX", planned.raw, msg_time=planned.arrival)
            appended[planned.message_id] = time.time()
            if index % step == 0 or index == len(load):
                print(f"  {label}: appended {index}/{len(load)}", flush=True)
    finally:
        for client in clients.values():
            client.logout()
    return appended


@contextmanager
def servers(users: Sequence[str]) -> Iterator[tuple[DovecotServer, TimedSink]]:
    with DovecotServer(dict.fromkeys(users, PASSWORD)) as dovecot, TimedSink() as sink:
        yield dovecot, sink
