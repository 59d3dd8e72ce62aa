"""Model-based intake: random folder histories against a real IMAP server, with cuts and restarts.

Hypothesis drives two watched folders of one account (INBOX and Filed) through histories of new
messages (with and without a Message-ID, some larger than the size above which they are fetched in
pieces), the same message again in either folder, messages appended out of arrival order, expunges
by another client (also between the bot's SEARCH and FETCH), UIDVALIDITY resets (Dovecot), and
the bot's intake polling them through a proxy that cuts the connection after any number of bytes,
crashing at any intake failpoint, and restarting.

Promises, checked after every step: a folder's cursor never passes a UID the database does not
know in that folder; no message is recorded twice. After the history settles (two clean polls):
every message that was in a watched folder when a poll of it succeeded, or is there now, is
recorded exactly once, with exactly its bytes in the archive.

``MAILBOT_INTAKE_EXAMPLES=N`` runs N histories (default 8, within about a minute and a half).
"""

from __future__ import annotations

import contextlib
import email.policy
import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from mailbot import imap, intake
from mailbot.config import parse_settings
from mailbot.worker import Worker
from storage import failpoints
from storage.models import Delivery, Message
from tests.conftest import IN_CI, PASSWORD, PASSWORD_ENV, ImapServer, _start_imap, make_config
from tests.support.dovecot import DovecotServer, dovecot_binary
from tests.support.proxy import TcpProxy

EXAMPLES = int(os.environ.get("MAILBOT_INTAKE_EXAMPLES", "8"))
SMP_BOX = "min.gao@aminer.cn"
FOLDERS = ("INBOX", "Filed")
BOX_OF = {"INBOX": "smp", "Filed": "smp-filed"}
PIECES_ABOVE = 3000  # lowered from 8 MiB so histories have messages fetched in pieces
PIECE_BYTES = 1024
IMAP_POINTS = ("imap.select", "imap.search", "imap.fetch.summaries", "imap.fetch.bodies", "imap.fetch.piece")
CRASH_POINTS = (
    *IMAP_POINTS,
    "archive.write",
    "archive.rename",
    "intake.cursor_reset",
    "intake.record",
)
BASE_ARRIVAL = datetime.fromisoformat("2024-08-20T09:00:00+08:00")
HOW = ("clean", "a person expunges", "crash", "cut at a command", "cut mid-response")
# every step ends with a poll of either folder, done one of these ways (Hypothesis enables only some
# rules in each history, so a poll that were a rule of its own could be left out of many)
POLLS = st.tuples(
    st.sampled_from(HOW),
    st.sampled_from(CRASH_POINTS),
    st.integers(1, 5),
    st.integers(0, 40_000),
    st.sampled_from(FOLDERS),
)
Poll = tuple[str, str, int, int, str]


@dataclass(frozen=True)
class Mail:
    number: int
    message_id: str | None
    raw: bytes

    @property
    def key(self) -> str:
        return self.message_id or f"sha256:{hashlib.sha256(self.raw).hexdigest()}"


def compose(number: int, with_id: bool, large: bool) -> Mail:
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = f"applicant{number}@example.edu.cn"
    mail["To"] = SMP_BOX
    mail["Subject"] = f"申报材料 {number}"
    mail["Date"] = format_datetime(BASE_ARRIVAL)
    message_id = f"<model-{number}@example.edu.cn>" if with_id else None
    if message_id:
        mail["Message-ID"] = message_id
    filler = random.Random(number).randbytes(4 * PIECES_ABOVE).hex() if large else ""
    mail.set_content(f"第 {number} 封。\n{filler}\n")
    return Mail(number, message_id, mail.as_bytes())


class Server:
    """What another mail client does to the account: append, look, expunge."""

    def __init__(self, imap_server: ImapServer) -> None:
        self.imap_server = imap_server

    @contextlib.contextmanager
    def session(self, folder: str, readonly: bool = False) -> Iterator[Any]:
        client = self.imap_server.client(SMP_BOX)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.select_folder(folder, readonly=readonly)
            yield client
        finally:
            client.logout()

    def append(self, folder: str, mail: Mail, arrival: datetime) -> None:
        self.imap_server.append(SMP_BOX, mail.raw, arrival, folder=folder)

    def contents(self, folder: str) -> tuple[int, dict[int, bytes]]:
        """(UIDVALIDITY, UID → bytes) of the folder now."""
        with self.session(folder, readonly=True) as client:
            validity = int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            return validity, {uid: bytes(item[b"BODY[]"]) for uid, item in data.items() if item.get(b"BODY[]")}

    def uids(self, folder: str) -> tuple[int, list[int]]:
        """(UIDVALIDITY, UIDs) of the folder now."""
        with self.session(folder, readonly=True) as client:
            validity = int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])
            return validity, list(client.search(["ALL"]))

    def expunge(self, folder: str, uid: int) -> None:
        with self.session(folder) as client:
            client.delete_messages([uid])
            client.expunge()


@pytest.mark.timeout(max(180, 20 * EXAMPLES))
def test_intake_keeps_every_message_once_through_any_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "PIECES_ABOVE", PIECES_ABOVE)
    monkeypatch.setattr(imap, "PIECE_BYTES", PIECE_BYTES)
    kind = "dovecot" if dovecot_binary() is not None else "pymap"
    if kind == "pymap" and IN_CI:
        pytest.fail("dovecot is not installed (CI=true: .ci/run installs dovecot-imapd)")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    histories: list[int] = []

    class IntakeHistory(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            number = len(histories)
            histories.append(0)
            # a new server for each history: the same steps then meet the same UIDs and sizes
            self.imap = _start_imap(kind)
            self.server = Server(self.imap)
            self.proxy = TcpProxy((self.imap.host, self.imap.port))
            self.proxy.start()
            no_smtp: Any = SimpleNamespace(host="127.0.0.1", port=1)  # intake alone: nothing is sent
            raw = make_config(tmp_path / f"history-{number}", self.imap, no_smtp)
            smp = next(box for box in raw["mailbox"] if box["user"] == SMP_BOX)
            smp.update(port=self.proxy.port, batch_size=2)
            filed = dict(smp, name="smp-filed", folder="Filed")
            raw["mailbox"] = [smp, filed]
            self.settings = parse_settings(raw, "model configuration")
            self.bot = Worker(self.settings, inline=True)
            self.mails: list[Mail] = []
            self.must: set[str] = set()  # keys that were in a folder when a poll of it succeeded
            self.resets = 0

        # --- what people and servers do, each followed by a poll -----------------------------

        @rule(
            folder=st.sampled_from(FOLDERS),
            shapes=st.lists(
                st.tuples(st.sampled_from(["with id", "without id", "large", "again"]), st.integers(0, 200)),
                min_size=1,
                max_size=4,
            ),
            then=POLLS,
        )
        def deliver(self, folder: str, shapes: list[tuple[str, int]], then: Poll) -> None:
            """New messages (with a Message-ID or without, large) or one delivered before again,
            arriving hours apart in any order: UID order is not arrival order."""
            for shape, hours in shapes:
                earlier = [m for m in self.mails if m.message_id]
                if shape == "again" and earlier:
                    mail = earlier[hours % len(earlier)]
                else:
                    mail = compose(len(self.mails), shape != "without id", shape == "large")
                    self.mails.append(mail)
                self.server.append(folder, mail, BASE_ARRIVAL - timedelta(hours=hours))
            self.poll_as(*then)

        @rule(which=st.integers(0, 50), folder=st.sampled_from(FOLDERS), then=POLLS)
        def person_expunges(self, which: int, folder: str, then: Poll) -> None:
            _validity, present = self.server.uids(folder)
            if present:
                self.server.expunge(folder, present[which % len(present)])
            self.poll_as(*then)

        @precondition(lambda self: kind == "dovecot" and self.resets < 1)
        @rule(then=POLLS)
        def uidvalidity_reset(self, then: Poll) -> None:
            assert isinstance(self.imap.server, DovecotServer)
            self.bot.close()  # the server goes away under the bot: it reconnects afterwards
            self.imap.server.reset_uidvalidity(SMP_BOX)
            self.bot = Worker(self.settings, inline=True)
            self.resets += 1
            self.poll_as(*then)

        @rule(then=POLLS)
        def restart(self, then: Poll) -> None:
            self.restart_bot()
            self.poll_as(*then)

        @rule(then=POLLS)
        def poll_again(self, then: Poll) -> None:
            self.poll_as(*then)

        # --- what the bot does ------------------------------------------------------------

        def restart_bot(self) -> None:
            self.bot.close()
            self.bot = Worker(self.settings, inline=True)

        def poll(self, folder: str) -> None:
            _validity, before = self.server.contents(folder)
            self.bot.intake[BOX_OF[folder]].poll_now()
            _validity, after = self.server.contents(folder)
            # what a person expunged meanwhile was not there to be taken in
            self.must |= {self.key_of(raw) for uid, raw in before.items() if uid in after}

        def poll_as(self, how: str, point: str, hit: int, budget: int, folder: str) -> None:
            """A poll: clean; while a person expunges one of the messages just before the bodies
            are fetched; stopped by a crash at a failpoint (the bot then restarts); or by the
            connection dropped as a command goes out or after ``budget`` bytes from the self.server."""
            if how == "clean":
                self.poll(folder)
                return
            if how == "a person expunges":
                fetch = imap.MailboxClient.fetch

                def expunged_first(client: imap.MailboxClient, uids: Sequence[int]) -> Iterator[imap.FetchedMail]:
                    if uids:
                        self.server.expunge(folder, uids[hit % len(uids)])
                    return fetch(client, uids)

                with mock.patch.object(imap.MailboxClient, "fetch", expunged_first):
                    self.bot.intake[BOX_OF[folder]].poll_now()
                return
            if how == "crash":
                failpoints.configure(f"{point}={hit}:raise")
            elif how == "cut at a command":
                imap_point = point if point in IMAP_POINTS else "imap.fetch.bodies"
                failpoints.configure(f"{imap_point}={hit}:call", on_call=lambda _name: self.proxy.cut_all())
            else:
                self.proxy.cut_after_server_bytes(budget)
            try:
                self.bot.intake[BOX_OF[folder]].poll_now()
            except Exception:  # noqa: S110 - the poll fails; the promises are checked after
                pass
            finally:
                failpoints.configure(None)
                self.proxy.cut_after_server_bytes(None)
            if how == "crash":
                self.restart_bot()

        # --- the promises -----------------------------------------------------------------

        def key_of(self, raw: bytes) -> str:
            return next((m.key for m in self.mails if m.raw == raw), f"unknown:{hashlib.sha256(raw).hexdigest()}")

        def records(self) -> list[Message]:
            with self.bot.store.sessions() as session:
                return list(session.scalars(select(Message)))

        @invariant()
        def cursor_never_passes_an_unrecorded_uid(self) -> None:
            histories[-1] += 1
            with self.bot.store.sessions() as session:
                for folder in FOLDERS:
                    known_validity, last_uid = self.bot.store.intake.cursor(BOX_OF[folder], folder)
                    validity, present = self.server.uids(folder)
                    if known_validity != validity:
                        continue
                    delivered = set(
                        session.scalars(
                            select(Delivery.uid).where(
                                Delivery.mailbox == BOX_OF[folder],
                                Delivery.folder == folder,
                                Delivery.uidvalidity == validity,
                            )
                        )
                    )
                    passed = sorted(uid for uid in present if uid <= last_uid and uid not in delivered)
                    assert not passed, f"{folder}: cursor at {last_uid} passed unrecorded UIDs {passed}"

        @invariant()
        def nothing_is_recorded_twice(self) -> None:
            records = self.records()
            keys = [m.message_key for m in records]
            assert len(keys) == len(set(keys)), sorted(keys)
            digests = [m.sha256 for m in records]
            assert len(digests) == len(set(digests)), "the same bytes recorded twice"

        def teardown(self) -> None:
            try:
                for _round in range(2):
                    for folder in FOLDERS:
                        self.poll(folder)
                for folder in FOLDERS:
                    _validity, present = self.server.contents(folder)
                    self.must |= {self.key_of(raw) for raw in present.values()}
                records = {m.message_key: m for m in self.records()}
                missing = sorted(self.must - set(records))
                assert not missing, f"never recorded: {missing}"
                for key, message in records.items():
                    copies = {m.raw for m in self.mails if m.key == key}
                    assert copies, f"recorded {key}, which was never delivered"
                    assert self.bot.store.archive.get(message.sha256) in copies, f"{key}: archive differs"
            finally:
                self.bot.close()
                self.proxy.stop()
                self.imap.server.stop()

    run_state_machine_as_test(
        IntakeHistory,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"{len(histories)} histories, {sum(histories)} steps checked")
    assert len(histories) >= min(EXAMPLES, 2)
