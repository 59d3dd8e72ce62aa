"""``[queue] imap_folder``: the originals of review items move to a folder admins see in their mail client."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from sqlalchemy import select

from mailbot.embedded import SmtpSink
from mailbot.worker import Worker
from parsers.model import Submission
from parsers.spec import FormSpec
from storage.models import Message
from tests.conftest import ImapServer, load_corpus, make_settings

REVIEW_FOLDER = "Intake/Needs review"


def test_unreadable_originals_move_to_the_review_folder(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-001", "smp-009", "smp-047"])  # accepted, scanned, corrupt
    settings = make_settings(tmp_path, imap_server, smtp_sink, queue={"imap_folder": REVIEW_FOLDER})
    with Worker(settings) as bot:
        summary = bot.single_pass()
    assert summary.errors == []
    unreadable = sorted(truth[n]["message_id"] for n in ("smp-009", "smp-047"))
    assert sorted(imap_server.message_ids("min.gao@aminer.cn", REVIEW_FOLDER)) == unreadable
    assert imap_server.message_ids("min.gao@aminer.cn", "INBOX") == [truth["smp-001"]["message_id"]]
    assert len(list(settings.queue_dir.iterdir())) == 2, "the queue folders are there as well"


def test_a_large_message_is_decoded_apart_and_its_files_still_land(tmp_path: Path) -> None:
    import os
    from datetime import UTC, datetime
    from email.message import EmailMessage

    from mailbot.review import IN_PROCESS_BYTES, ReviewQueue
    from storage.models import Message

    payload = os.urandom(IN_PROCESS_BYTES + 1024 * 1024)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@b.edu.cn", "min.gao@aminer.cn", "large"
    mail.set_content("申报表见附件")
    mail.add_attachment(payload, maintype="application", subtype="pdf", filename="申报表.pdf")
    raw = mail.as_bytes()
    assert len(raw) > IN_PROCESS_BYTES
    message = Message(
        message_key="<large@b.edu.cn>",
        message_id="<large@b.edu.cn>",
        sha256="ab" * 32,
        mailbox="smp",
        call_id="smp-zhipu-2024",
        arrival=datetime(2024, 9, 1, tzinfo=UTC),
        reference="SMP24-0099",
        reason="corrupt",
        from_addr="a@b.edu.cn",
        subject="large",
    )
    folder = ReviewQueue(tmp_path / "queue").add(message, raw, "unreadable", "")
    assert (folder / "attachments" / "申报表.pdf").read_bytes() == payload
    assert (folder / "message.eml").read_bytes() == raw


def test_a_message_over_the_size_limit_is_refused_unread_answered_and_queued_whole(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    import json
    import os
    from datetime import UTC, datetime
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "zhang.wei@pku.edu.cn", "min.gao@aminer.cn", "申报材料"
    mail["Message-ID"] = "<oversized@pku.edu.cn>"
    mail.set_content("申报表见附件")
    mail.add_attachment(os.urandom(1024 * 1024), maintype="application", subtype="pdf", filename="申报表.pdf")
    imap_server.append("min.gao@aminer.cn", mail.as_bytes(), datetime(2024, 9, 1, tzinfo=UTC))
    settings = make_settings(tmp_path, imap_server, smtp_sink, processing={"max_message_mb": 1})
    with Worker(settings) as bot:
        handed_to_reader: list[Path] = []
        reader = bot.pipeline.readings.reader

        def reading(original: Path, spec: FormSpec) -> Future[Submission]:
            handed_to_reader.append(original)
            return reader(original, spec)

        bot.pipeline.readings.reader = reading
        summary = bot.single_pass()
        with bot.store.sessions() as session:
            sha = session.scalars(select(Message.sha256)).one()
        original = bot.store.archive.get(sha)
    assert len(original) > 1024 * 1024
    assert handed_to_reader == [], "a message over the limit is never read in full, here or in a worker"
    assert [(p.outcome, p.acknowledged, p.in_review) for p in summary.processed] == [("unreadable", True, True)]
    [folder] = list(settings.queue_dir.iterdir())
    assert (folder / "message.eml").read_bytes() == original
    assert json.loads((folder / "reason.json").read_text(encoding="utf-8"))["reason"] == "too-large"
    [answer] = smtp_sink.received
    assert answer.recipients == ["zhang.wei@pku.edu.cn"]
