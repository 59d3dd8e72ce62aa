"""``[queue] imap_folder``: the originals of review items move to a folder admins see in their mail client."""

from __future__ import annotations

from pathlib import Path

from mailbot.app import Bot
from mailbot.embedded import SmtpSink
from tests.conftest import ImapServer, load_corpus, make_settings

REVIEW_FOLDER = "Intake/Needs review"


def test_unreadable_originals_move_to_the_review_folder(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-001", "smp-009", "smp-047"])  # accepted, scanned, corrupt
    settings = make_settings(tmp_path, imap_server, smtp_sink, queue={"imap_folder": REVIEW_FOLDER})
    with Bot(settings) as bot:
        summary = bot.run_once()
    assert summary.errors == []
    unreadable = sorted(truth[n]["message_id"] for n in ("smp-009", "smp-047"))
    assert sorted(imap_server.message_ids("min.gao@aminer.cn", REVIEW_FOLDER)) == unreadable
    assert imap_server.message_ids("min.gao@aminer.cn", "INBOX") == [truth["smp-001"]["message_id"]]
    assert len(list(settings.queue_dir.iterdir())) == 2, "the queue folders are there as well"
