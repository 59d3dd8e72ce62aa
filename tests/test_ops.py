"""``mailbot check``, ``status``, ``purge`` and ``export --redact`` against real servers and databases."""

from __future__ import annotations

import contextlib
import copy
import csv
import email
import email.policy
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

import storage.db
from mailbot import cli
from mailbot.admin.checks import run_checks
from mailbot.admin.purge import purge
from mailbot.clock import utcnow
from mailbot.config import ConfigError, Settings
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.runners.drivers import RunSummary, take_in
from mailbot.worker import Worker
from storage.db import make_engine
from storage.models import Message
from tests.conftest import PASSWORD_ENV, ImapServer, load_corpus, make_config

PURGED_CALL = "caai-ant-2024"
# two accepted, a duplicate of one of them, an unreadable one (a queue folder) and a late one
PURGED = ["caai-002", "caai-006", "caai-007", "caai-023", "caai-028"]
KEPT = ["smp-001"]  # the other call, which stays
PERSONAL_FIELDS = ("applicant_name", "email", "phone", "institution")


ConfigWriter = Callable[..., tuple[Path, Settings]]


def config_writer(tmp_path: Path, imap: ImapServer, smtp: SmtpSink, database_url: str | None) -> ConfigWriter:
    """Writes the configuration file (changed by ``edit``) that the CLI and the Worker both read."""

    def write(edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda raw: raw) -> tuple[Path, Settings]:
        raw = edit(make_config(tmp_path, imap, smtp, database_url))
        path = tmp_path / "mailbot.toml"
        return path, write_config(raw, path)

    return write


@pytest.fixture
def configure(tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, database_url: str) -> ConfigWriter:
    """On SQLite and on PostgreSQL."""
    return config_writer(tmp_path, imap_server, smtp_sink, database_url)


@pytest.fixture
def configure_sqlite(tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink) -> ConfigWriter:
    """For what does not depend on the database."""
    return config_writer(tmp_path, imap_server, smtp_sink, None)


def cli_run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- check ------------------------------------------------------------------------------------


def test_check_is_all_ok_against_working_servers(configure: ConfigWriter, capsys: pytest.CaptureFixture[str]) -> None:
    config, settings = configure()
    lines = run_checks(settings)
    assert all(line.ok for line in lines), [str(line) for line in lines]
    whats = " | ".join(line.what for line in lines)
    for part in ("configuration", "data directory", "archive", "review queue", "database", "SMTP"):
        assert part in whats
    assert sum(line.what.startswith("mailbox ") for line in lines) == len(settings.mailbox)
    with Worker(settings):
        pass  # creates the schema: the database line then says it is current
    code, out, _ = cli_run(capsys, config, "check")
    assert code == 0
    assert out.count("\n") == len(lines) and all(line.startswith("OK") for line in out.splitlines())
    assert "is current" in out


def test_check_names_an_unset_password_variable(
    configure_sqlite: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _ = configure_sqlite()
    monkeypatch.delenv(PASSWORD_ENV)
    code, out, _ = cli_run(capsys, config, "check")
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 2, out  # both mailboxes use the variable
    for line in failing:
        assert PASSWORD_ENV in line and "is not set" in line and "export it before starting mailbot" in line


def test_check_reports_a_refused_login(
    configure_sqlite: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _ = configure_sqlite()
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    code, out, _ = cli_run(capsys, config, "check")
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert {line.split(":")[0] for line in failing} == {
        "FAIL  mailbox smp (min.gao@aminer.cn at 127.0.0.1",
        "FAIL  mailbox caai (myjj@caai.cn at 127.0.0.1",
    }
    assert all("refused the login" in line for line in failing), failing
    assert "not-the-password" not in out


# --- status -----------------------------------------------------------------------------------


def test_status_shows_polls_backlog_outbox_and_queue(
    imap_server: ImapServer,
    corpus_dir: Path,
    configure: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, settings = configure()
    code, out, _ = cli_run(capsys, config, "status")
    assert code == 0 and "The database is empty" in out

    load_corpus(imap_server, corpus_dir, ["smp-001", "smp-002", "smp-047", "caai-001"])
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
    load_corpus(imap_server, corpus_dir, ["smp-008"])
    with Worker(settings) as bot:
        polled = RunSummary()
        take_in(bot.runners, polled)
    assert polled.errors == [] and sum(p.new for p in polled.polled) == 1
    code, out, _ = cli_run(capsys, config, "status")
    assert code == 0, out
    lines = out.splitlines()
    smp = next(line for line in lines if line.strip().startswith("smp "))
    assert "last good poll never" not in smp and "FAILING" not in smp
    assert "Backlog: 1 message(s)" in out
    assert "Outbox: 0 pending, 0 sending, 3 sent, 0 failed, 0 held back, 0 bounced" in out
    assert "Review queue: 1 item(s), oldest arrived 2024-09-08 21:00:47" in out

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with Worker(settings) as bot, pytest.raises(Exception, match="refused the login"):
        bot.intake["smp"].poll_now()
    _, out, _ = cli_run(capsys, config, "status")
    smp = next(line for line in out.splitlines() if line.strip().startswith("smp "))
    assert "NOW FAILING since" in smp and "refused the login" in smp


# --- purge ------------------------------------------------------------------------------------


def _texts(value: Any) -> Iterator[str]:
    """Every readable form of a column value: JSON decoded, mail decoded, bytes as text."""
    if value is None:
        return
    if isinstance(value, dict | list):
        yield json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bytes | memoryview):
        data = bytes(value)
        yield data.decode("utf-8", "replace")
        if data:
            mail = email.message_from_bytes(data, policy=email.policy.default)
            yield " ".join(str(v) for v in mail.values())
            for part in mail.walk():
                if part.get_content_maintype() == "text":
                    yield str(part.get_content())
    elif isinstance(value, str):
        yield value
        if value[:1] in "[{":
            with contextlib.suppress(ValueError):
                yield json.dumps(json.loads(value), ensure_ascii=False)
    else:
        yield str(value)


def database_text(url: str) -> str:
    """Every value of every column of every table, as text."""
    engine = make_engine(url)
    metadata = MetaData()
    metadata.reflect(engine)
    chunks: list[str] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    chunks.extend(_texts(value))
    engine.dispose()
    return "\n".join(chunks)


def data_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def personal_values(truth: dict[str, dict[str, Any]], names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        info = truth[name]
        fields = info.get("fields") or {}
        found.update(str(fields[f]) for f in PERSONAL_FIELDS if fields.get(f))
        found.add(info["mail"]["from"])
        found.add(info["message_id"])
        found.update(a["filename"] for a in info["mail"]["attachments"])
    return found


def encodings(value: str) -> list[bytes]:
    """The ways a value is stored: UTF-8, and the \\uXXXX escapes of JSON written with ensure_ascii."""
    return list({value.encode(), json.dumps(value)[1:-1].encode()})


@pytest.fixture
def processed_call(
    imap_server: ImapServer, corpus_dir: Path, configure: ConfigWriter
) -> tuple[Path, Settings, dict[str, dict[str, Any]]]:
    truth = load_corpus(imap_server, corpus_dir, PURGED + KEPT)
    config, settings = configure()
    with Worker(settings) as bot:
        summary = bot.single_pass()
    assert summary.errors == []
    assert len(summary.processed) == len(truth)
    return config, settings, truth


@pytest.fixture
def sqlite_keeps_deleted_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite as most platforms build it: freed pages keep their old bytes (Debian's turns that off)."""
    original = storage.db._sqlite_pragmas

    def pragmas(connection: Any, record: Any) -> None:
        original(connection, record)
        connection.execute("PRAGMA secure_delete=OFF")

    monkeypatch.setattr(storage.db, "_sqlite_pragmas", pragmas)


def test_purge_leaves_no_personal_data_of_the_call(
    sqlite_keeps_deleted_bytes: None,
    processed_call: tuple[Path, Settings, dict[str, dict[str, Any]]],
    corpus_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, settings, truth = processed_call
    secret = personal_values(truth, PURGED) - personal_values(truth, KEPT)
    raws = {name: (corpus_dir / f"{name}.eml").read_bytes() for name in truth}
    assert settings.queue_dir.is_dir() and any(settings.queue_dir.iterdir())

    # before: the data is there, so the search below can find it
    files = b"\n".join(data_files(settings.data_dir).values())
    assert any(raws[name] in files for name in PURGED)
    assert "陈浩" in database_text(settings.database_url)

    # a dry run says what would go and changes nothing
    db_before, files_before = database_text(settings.database_url), data_files(settings.data_dir)
    code, out, _ = cli_run(
        capsys, config, "purge", "--call", PURGED_CALL, "--before", utcnow().isoformat(), "--dry-run"
    )
    assert code == 0 and out.startswith("would remove: 5 message(s), 5 raw file(s), 1 queue folder(s)"), out
    assert database_text(settings.database_url) == db_before
    assert data_files(settings.data_dir) == files_before

    code, out, _ = cli_run(capsys, config, "purge", "--call", PURGED_CALL, "--before", utcnow().isoformat())
    assert code == 0 and out.startswith("removed personal data of: 5 message(s)"), out

    leaks = []
    for path, data in data_files(settings.data_dir).items():
        for name in PURGED:
            if raws[name] in data or hashlib.sha256(raws[name]).hexdigest() in path:
                leaks.append(f"{path}: the raw message {name}")
        leaks.extend(f"{path}: {value!r}" for value in secret for form in encodings(value) if form in data)
    text = database_text(settings.database_url)
    leaks.extend(f"database: {value!r}" for value in secret if value in text)
    assert not leaks, "\n".join(sorted(set(leaks)))

    # the other call is untouched, and the purged call keeps its anonymous counts
    kept = truth[KEPT[0]]
    assert kept["fields"]["applicant_name"] in text
    assert raws[KEPT[0]] in b"".join(data_files(settings.data_dir).values())
    with Worker(settings) as bot, bot.store.sessions() as session:
        outcomes = sorted(
            str(m.outcome) for m in session.scalars(select(Message).where(Message.call_id == PURGED_CALL))
        )
    assert outcomes == sorted(truth[name]["outcome"] for name in PURGED)

    # purging again finds nothing left to purge
    code, out, _ = cli_run(capsys, config, "purge", "--call", PURGED_CALL, "--before", utcnow().isoformat())
    assert code == 0 and "0 message(s)" in out


def test_purge_refuses_an_open_call(
    processed_call: tuple[Path, Settings, dict[str, dict[str, Any]]],
    configure: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, settings, _ = processed_call

    def reopen(raw: dict[str, Any]) -> dict[str, Any]:
        changed = copy.deepcopy(raw)
        for call in changed["call"]:
            if call["id"] == PURGED_CALL:
                call["deadline"] = utcnow() + timedelta(days=30)
        return changed

    db_before, files_before = database_text(settings.database_url), data_files(settings.data_dir)
    config, reopened = configure(reopen)
    code, _, err = cli_run(capsys, config, "purge", "--call", PURGED_CALL, "--before", utcnow().isoformat())
    assert code == 2 and "is still open" in err and "nothing is purged" in err
    with pytest.raises(ConfigError, match="still open"):
        purge(reopened, PURGED_CALL, utcnow(), dry_run=True, actor="test")
    assert database_text(settings.database_url) == db_before
    assert data_files(settings.data_dir) == files_before


# --- export -----------------------------------------------------------------------------------


def contact_values(truth: dict[str, dict[str, Any]]) -> set[str]:
    return {
        str(value)
        for info in truth.values()
        for value in [info["mail"]["from"], *((info.get("fields") or {}).get(f) for f in ("email", "phone"))]
        if value
    }


def test_export_redact_leaves_out_contact_columns(
    processed_call: tuple[Path, Settings, dict[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, truth = processed_call
    code, full, _ = cli_run(capsys, config, "export", "--format", "json")
    assert code == 0
    assert all(value in full for value in contact_values(truth))

    code, redacted, _ = cli_run(capsys, config, "export", "--format", "json", "--redact")
    assert code == 0
    records = json.loads(redacted)
    assert len(records) == len(truth)
    assert all(r["from"] is None for r in records)
    forms = [r["fields"] for r in records if r["fields"]]
    assert forms and all("email" not in f and "phone" not in f for f in forms)
    assert all(f["applicant_name"] for f in forms)

    code, redacted, _ = cli_run(capsys, config, "export", "--format", "csv", "--redact")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(redacted.lstrip("\ufeff"))))
    assert len(rows) == len(truth)
    assert "email" not in rows[0] and "phone" not in rows[0] and "applicant_name" in rows[0]
    assert all(not row["from"] for row in rows)


def test_export_redact_leaves_no_address_anywhere(
    processed_call: tuple[Path, Settings, dict[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, truth = processed_call
    code, redacted, _ = cli_run(capsys, config, "export", "--format", "json", "--redact")
    assert code == 0
    leaked = [line for line in redacted.splitlines() if any(v in line for v in contact_values(truth))]
    assert leaked == []
