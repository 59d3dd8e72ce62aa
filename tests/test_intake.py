"""Intake: a large message goes into the archive piece by piece, exactly as the server holds it;
the parser pool reads ahead of claims, while intake goes on and after."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot import imap, intake
from mailbot.embedded import SmtpSink
from mailbot.worker import Worker
from parsers.model import Submission
from storage.archive import Archived, RawArchive
from storage.models import Message
from tests.conftest import ImapServer, corpus_truth, load_corpus, make_settings
from tests.support.proxy import TcpProxy

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
    with Worker(settings) as bot:
        summary = bot.single_pass()
        with bot.store.sessions() as session:
            stored = {m.message_key: (m.sha256, m.size) for m in session.scalars(select(Message))}
        archived = {key: bot.store.archive.get(sha) for key, (sha, _size) in stored.items()}
    assert summary.errors == []
    assert len(in_pieces) == 2 and min(in_pieces) > piece_bytes
    assert sorted(p.outcome for p in summary.processed) == ["accepted"] * 3
    assert sorted(stored) == sorted(truth[name]["message_id"] for name in names)
    assert sorted(archived.values()) == sorted(server_copies(imap_server)), "exactly what the server holds"
    assert all(size == len(archived[key]) for key, (_sha, size) in stored.items())


def test_the_pool_reads_ahead_during_intake_and_then_of_what_is_next_each_message_once(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # one mailbox, appended in arrival order: intake's order is the order of claims
    names = ["smp-001", "smp-002", "smp-003", "smp-006", "smp-008", "smp-010"]
    load_corpus(imap_server, corpus_dir, names)
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        readings, store = bot.pipeline.readings, bot.store
        readings.read_ahead_max = 4
        bot.deciding.batch_size = 2
        steps: list[tuple[str, int]] = []  # ("read" | "claim", message row), in order
        start_reading, claim = readings.start_reading, store.to_decide.claim

        def recorded_reading(pk: int, **how: Any) -> Future[Submission]:
            steps.append(("read", pk))
            return start_reading(pk, **how)

        def recorded_claim(worker: str, limit: int) -> list[int]:
            claimed = claim(worker, limit)
            steps.extend(("claim", pk) for pk in claimed)
            return claimed

        monkeypatch.setattr(readings, "start_reading", recorded_reading)
        monkeypatch.setattr(store.to_decide, "claim", recorded_claim)
        summary = bot.single_pass()
    assert summary.errors == []
    assert len(summary.processed) == 6
    reads = [pk for step, pk in steps if step == "read"]
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 6, "each message read once"
    first_claim = next(index for index, (step, _) in enumerate(steps) if step == "claim")
    assert len([step for step, _ in steps[:first_claim] if step == "read"]) == 4, "the bound holds during intake"
    assert all(steps.index(("read", pk)) < steps.index(("claim", pk)) for pk in reads), (
        "the two beyond the bound are read ahead of their claims too, once the first are taken up"
    )


def _recorded_keys(bot: Worker) -> list[str]:
    with bot.store.sessions() as session:
        return sorted(str(m.message_key) for m in session.scalars(select(Message)))


@pytest.mark.timeout(60)
def test_a_drop_while_fetching_a_new_message_below_a_known_one_loses_nothing(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder holds a new message and, above it, a second copy of a known one; the connection drops
    while the new one's body is fetched. The next poll must still take the new one in."""
    truth = corpus_truth(corpus_dir)
    known_name, new_name = sorted(n for n in truth if truth[n]["mailbox"] == SMP_BOX)[:2]
    load_corpus(imap_server, corpus_dir, [known_name])
    with TcpProxy((imap_server.host, imap_server.port)) as proxy:
        settings = make_settings(tmp_path, imap_server, smtp_sink, mailbox={"port": proxy.port})
        box = settings.mailbox_by_name("smp")
        with Worker(settings, inline=True) as bot:
            bot.intake[box.name].poll_now()
            assert _recorded_keys(bot) == [truth[known_name]["message_id"]]
            load_corpus(imap_server, corpus_dir, [new_name])  # the next UID: new
            load_corpus(imap_server, corpus_dir, [known_name])  # the one after: a second copy of a known one
            fetch = imap.MailboxClient.fetch

            def dropped(client: imap.MailboxClient, uids: Sequence[int]) -> Iterator[imap.FetchedMail]:
                proxy.cut_all()  # a real drop on the wire, the moment the bodies are asked for
                return fetch(client, uids)

            with monkeypatch.context() as patch:
                patch.setattr(imap.MailboxClient, "fetch", dropped)
                with pytest.raises(Exception):  # noqa: B017 - the poll fails; what matters is what is left
                    bot.intake[box.name].poll_now()
            bot.intake[box.name].poll_now()
            assert _recorded_keys(bot) == sorted(truth[n]["message_id"] for n in (known_name, new_name))


@pytest.mark.timeout(60)
def test_a_message_expunged_by_a_person_while_the_bot_fetches_is_logged_and_the_rest_goes_on(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    truth = corpus_truth(corpus_dir)
    names = sorted(n for n in truth if truth[n]["mailbox"] == SMP_BOX)[:3]
    load_corpus(imap_server, corpus_dir, names)
    gone = truth[names[1]]["message_id"]
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    box = settings.mailbox_by_name("smp")
    fetch = imap.MailboxClient.fetch

    def expunged_first(client: imap.MailboxClient, uids: Sequence[int]) -> Iterator[imap.FetchedMail]:
        # a person deletes the middle message in a web mail client between the bot's SEARCH and FETCH
        person = imap_server.client(SMP_BOX)
        try:
            person.select_folder("INBOX")
            person.delete_messages(person.search(["HEADER", "Message-ID", gone]))
            person.expunge()
        finally:
            person.logout()
        return fetch(client, uids)

    with Worker(settings, inline=True) as bot:
        with monkeypatch.context() as patch, caplog.at_level(logging.INFO, logger="mailbot.intake"):
            patch.setattr(imap.MailboxClient, "fetch", expunged_first)
            result = bot.intake[box.name].poll_now()
        assert result.new == 2
        assert _recorded_keys(bot) == sorted(truth[n]["message_id"] for n in (names[0], names[2]))
        assert any("gone" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records), caplog.text
        assert bot.store.intake.cursor("smp", "INBOX")[1] == 3, "nothing stalls at the vanished UID"
        assert bot.intake[box.name].poll_now().new == 0
