"""Intake: a large message goes into the archive piece by piece, exactly as the server holds it;
a batch run's pool reads while intake goes on."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot import imap, intake, pipeline
from mailbot.app import Bot
from mailbot.embedded import SmtpSink
from parsers.model import Submission
from parsers.spec import FormSpec
from storage.archive import Archived, RawArchive
from storage.models import Message
from tests.conftest import ImapServer, load_corpus, make_settings

SMP_BOX = "min.gao@aminer.cn"


def server_copies(imap_server: ImapServer) -> list[bytes]:
    client = imap_server.client(SMP_BOX)
    try:
        client.select_folder("INBOX", readonly=True)
        return [bytes(data[b"BODY[]"]) for data in client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"]).values()]
    finally:
        client.logout()


@pytest.mark.parametrize("piece_bytes", [4096, 7 * 1024 + 7], ids=["4 KiB pieces", "uneven pieces"])
def test_large_messages_are_archived_in_pieces_byte_for_byte_and_read_as_usual(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    piece_bytes: int,
) -> None:
    names = ["smp-001", "smp-002", "smp-006"]  # accepted .docx forms of a few dozen KB
    truth = load_corpus(imap_server, corpus_dir, names)
    sizes = sorted(len((corpus_dir / f"{name}.eml").read_bytes()) for name in names)
    # the middle-sized one and the largest are fetched in pieces, the smallest whole
    monkeypatch.setattr(intake, "PIECES_ABOVE", sizes[0] + 1)
    monkeypatch.setattr(imap, "PIECE_BYTES", piece_bytes)
    in_pieces: list[int] = []
    put_pieces = RawArchive.put_pieces

    def counted(archive: RawArchive, pieces: Iterable[bytes]) -> Archived:
        stored = put_pieces(archive, pieces)
        in_pieces.append(stored.size)
        return stored

    monkeypatch.setattr(RawArchive, "put_pieces", counted)
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Bot(settings) as bot:
        summary = bot.run_once()
        with bot.store.sessions() as session:
            stored = {m.message_key: (m.sha256, m.size) for m in session.scalars(select(Message))}
        archived = {key: bot.store.archive.get(sha) for key, (sha, _size) in stored.items()}
    assert summary.errors == []
    assert len(in_pieces) == 2 and min(in_pieces) > piece_bytes
    assert sorted(p.outcome for p in summary.processed) == ["accepted"] * 3
    assert sorted(stored) == sorted(truth[name]["message_id"] for name in names)
    assert sorted(archived.values()) == sorted(server_copies(imap_server)), "exactly what the server holds"
    assert all(size == len(archived[key]) for key, (_sha, size) in stored.items())


def test_a_batch_run_reads_while_intake_goes_on_each_message_once_and_within_the_bound(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["smp-001", "smp-002", "smp-006", "caai-001"]
    load_corpus(imap_server, corpus_dir, names)
    monkeypatch.setattr(pipeline, "READ_AHEAD_MAX", 2)
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Bot(settings) as bot:
        reader = bot.processor.reader
        started: list[tuple[Path, bool]] = []  # (message read, whether intake had finished)
        intake_done = False

        def recorded_reader(original: Path, spec: FormSpec) -> Future[Submission]:
            started.append((original, intake_done))
            return reader(original, spec)

        run_pending = bot.processor.run_pending

        def after_intake(*args: Any, **kwargs: Any) -> list[pipeline.Processed]:
            nonlocal intake_done
            intake_done = True
            return run_pending(*args, **kwargs)

        monkeypatch.setattr(bot.processor, "reader", recorded_reader)
        monkeypatch.setattr(bot.processor, "run_pending", after_intake)
        summary = bot.run_once()
    assert summary.errors == []
    assert len(summary.processed) == 4
    assert len(started) == 4 and len({path for path, _ in started}) == 4, "each message read once"
    assert [after for _, after in started] == [False, False, True, True], (
        "two read during intake (the bound), the rest when claimed"
    )
