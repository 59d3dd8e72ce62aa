"""``mailbot import``: .eml files, a maildir and an mbox taken in as if they had arrived."""

from __future__ import annotations

import mailbox
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from mailbot.admin.importer import newest_received
from mailbot.cli import main
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.export import export_records
from mailbot.worker import Worker
from tests.conftest import ImapServer, corpus_truth, make_config

NAMES = ["smp-001", "smp-002", "caai-002", "caai-003", "smp-013"]


def test_newest_received_is_the_arrival(corpus_dir: Path) -> None:
    truth = corpus_truth(corpus_dir)
    for name in NAMES:
        arrival = newest_received((corpus_dir / f"{name}.eml").read_bytes())
        assert arrival == datetime.fromisoformat(truth[name]["arrival"]), name
    assert newest_received(b"Subject: no trace headers\r\n\r\nbody") is None


@pytest.mark.parametrize("shape", ["files", "maildir", "mbox"])
def test_import_records_decides_and_answers(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    shape: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth = corpus_truth(corpus_dir)
    source = tmp_path / "source"
    if shape == "files":
        source.mkdir()
        for name in NAMES:
            shutil.copy(corpus_dir / f"{name}.eml", source / f"{name}.eml")
    elif shape == "maildir":
        box = mailbox.Maildir(source, create=True)
        for name in NAMES:
            box.add((corpus_dir / f"{name}.eml").read_bytes())
    else:
        source = tmp_path / "source.mbox"
        mbox = mailbox.mbox(source, create=True)
        for name in NAMES:
            mbox.add((corpus_dir / f"{name}.eml").read_bytes())
        mbox.flush()
    config = tmp_path / "mailbot.toml"
    settings = write_config(make_config(tmp_path, imap_server, smtp_sink), config)

    assert main(["--config", str(config), "import", str(source)]) == 0
    assert "imported 5 new message(s) of 5" in capsys.readouterr().err
    with Worker(settings) as bot, bot.store.sessions() as session:
        records = {r["message_id"]: r for r in export_records(session)}
    for name in NAMES:
        record = records[truth[name]["message_id"]]
        assert record["outcome"] == truth[name]["outcome"], name
        assert record["call"] == truth[name]["call"], name
        assert datetime.fromisoformat(record["arrival"]) == datetime.fromisoformat(truth[name]["arrival"])
    answered = [n for n in NAMES if truth[n]["outcome"] != "ignored"]
    assert len(smtp_sink.received) == len(answered)

    # importing the same mail again records nothing new and answers nobody twice
    assert main(["--config", str(config), "import", str(source)]) == 0
    assert "imported 0 new message(s) of 5" in capsys.readouterr().err
    assert len(smtp_sink.received) == len(answered)


def test_import_without_a_time_needs_arrival(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mailbot.toml"
    write_config(make_config(tmp_path, imap_server, smtp_sink), config)
    bare = tmp_path / "bare.eml"
    bare.write_bytes(b"Message-ID: <bare@example.org>\r\nTo: min.gao@aminer.cn\r\nSubject: x\r\n\r\nhello\r\n")
    assert main(["--config", str(config), "import", "--record-only", str(bare)]) == 1
    assert "--arrival" in capsys.readouterr().err
    assert (
        main(["--config", str(config), "import", "--record-only", "--arrival", "2024-09-01T10:00:00+08:00", str(bare)])
        == 0
    )
