"""Fixtures for real servers: Dovecot (pymap where Dovecot is absent), aiosmtpd, SQLite and PostgreSQL.

Under ``CI=true`` a missing Dovecot or PostgreSQL fails the tests that need them instead of
skipping them, so a green CI always means the real servers were exercised.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import imapclient
import pytest
from sqlalchemy import create_engine, text

from mailbot.config import Settings, parse_settings
from mailbot.demo import local_config
from mailbot.embedded import EmbeddedImapServer, SmtpSink
from tests.support.dovecot import DovecotServer, dovecot_binary

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get("MAILBOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSWORD_ENV = "MAILBOT_TEST_IMAP_PASSWORD"
PASSWORD = "test-password-8d1c"

MAILBOX_USERS = ("min.gao@aminer.cn", "myjj@caai.cn")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this suite must run, not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(os.environ.get("MAILBOT_SHARED", REPO.parent / "shared"))
    if not path.is_dir():
        _missing(f"the shared corpus is not at {path}")
    return path


@pytest.fixture(scope="session")
def corpus_dir(shared_dir: Path) -> Path:
    return shared_dir / "corpus" / "dev"


@dataclass
class ImapServer:
    kind: str
    host: str
    port: int
    server: DovecotServer | EmbeddedImapServer

    def client(self, user: str) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(user, PASSWORD)
        client.normalise_times = False
        return client

    def append(self, user: str, raw: bytes, when: datetime, folder: str = "INBOX") -> None:
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw, msg_time=when)
        finally:
            client.logout()

    def message_ids(self, user: str, folder: str) -> list[str]:
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
            out = []
            for item in data.values():
                header = item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().strip()
                out.append(header.partition(":")[2].strip())
            return out
        finally:
            client.logout()


def _start_imap(kind: str) -> ImapServer:
    users = dict.fromkeys(MAILBOX_USERS, PASSWORD)
    if kind == "dovecot":
        dovecot = DovecotServer(users)
        dovecot.start()
        return ImapServer("dovecot", dovecot.host, dovecot.port, dovecot)
    pymap = EmbeddedImapServer(users)
    pymap.start()
    return ImapServer("pymap", pymap.host, pymap.port, pymap)


@pytest.fixture
def imap_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImapServer]:
    """A real IMAP server: Dovecot when installed (required under CI), else pymap."""
    if dovecot_binary() is None:
        if IN_CI:
            pytest.fail("dovecot is not installed (CI=true: .ci/run installs dovecot-imapd)")
        server = _start_imap("pymap")
    else:
        server = _start_imap("dovecot")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def dovecot(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImapServer]:
    """Dovecot itself, for tests that restart or reconfigure the server."""
    if dovecot_binary() is None:
        _missing("dovecot is not installed (apt-get install dovecot-imapd)")
    server = _start_imap("dovecot")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _missing(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}")
    name = f"mailbot_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'mailbot.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def make_config(
    tmp_path: Path,
    imap: ImapServer,
    smtp: SmtpSink,
    database_url: str | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    return local_config(
        tmp_path / "data",
        (imap.host, imap.port),
        (smtp.host, smtp.port),
        PASSWORD_ENV,
        database_url,
        **sections,
    )


def make_settings(
    tmp_path: Path,
    imap: ImapServer,
    smtp: SmtpSink,
    database_url: str | None = None,
    **sections: dict[str, Any],
) -> Settings:
    return parse_settings(make_config(tmp_path, imap, smtp, database_url, **sections), "test configuration")


def corpus_truth(corpus_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(corpus_dir.glob("*.json"))
        if p.name != "manifest.json"
    }


def load_corpus(imap: ImapServer, corpus_dir: Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Append corpus messages to their mailboxes with their arrival as INTERNALDATE, in arrival order."""
    truth = corpus_truth(corpus_dir)
    chosen = names or sorted(truth, key=lambda n: truth[n]["arrival"])
    for name in chosen:
        info = truth[name]
        imap.append(
            info["mailbox"],
            (corpus_dir / f"{name}.eml").read_bytes(),
            datetime.fromisoformat(info["arrival"]),
        )
    return {name: truth[name] for name in chosen}
