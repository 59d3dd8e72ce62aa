"""``mailbot queue``: the review-queue folder, list/show, retry after a fix, resolve, reject, a failed retry.

Against real servers (Dovecot or pymap, aiosmtpd, SQLite and PostgreSQL), through ``mailbot.cli.main``
where an admin would type the command and through the functions where the test needs to look inside.
"""

from __future__ import annotations

import copy
import email
import email.policy
import io
import json
import stat
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import docx
import pytest
from sqlalchemy import func, select

from mailbot import cli
from mailbot.admin.queue_actions import reject_item, resolve_item, retry_items
from mailbot.admin.queue_view import find_item, list_items, show_item
from mailbot.config import Settings, parse_settings
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.outbox import Outbox
from mailbot.worker import Worker
from storage.models import Application, Event, Message, MessageState, OutboxMail
from tests.conftest import ImapServer, load_corpus, make_config

CORRUPT_SMP = "smp-047"  # a truncated .docx (zip cut off)
CORRUPT_CAAI = "caai-023"  # a .docx whose document.xml is cut off
ARRIVAL = datetime.fromisoformat("2024-08-20T10:00:00+08:00")

# the applicant filled in an English copy of the form and left the Chinese labels blank
ENGLISH_LABELS = {
    "project_title": "Proposal Title",
    "applicant_name": "Principal Investigator",
    "institution": "Host Organisation",
    "email": "Contact Mail",
    "topic": "Call Topic",
}
ENGLISH_VALUES = {
    "project_title": "大模型驱动的作文自动评测方法研究",
    "applicant_name": "林晓东",
    "institution": "华东师范大学",
    "email": "lin.xd@ecnu.edu.cn",
    "topic": "3.2",
}
BLANK_CHINESE_LABELS = ("项目名称", "申请人姓名", "所在单位", "手机", "电子邮箱", "申报课题")


def english_form_mail() -> bytes:
    """A submission whose form the example configuration reads as "no-fields"."""
    document = docx.Document()
    document.add_paragraph("SMP-智谱 AI 大模型交叉学科基金申报表")
    chinese = document.add_table(rows=0, cols=2)
    for label in BLANK_CHINESE_LABELS:
        chinese.add_row().cells[0].text = label
    document.add_paragraph("English version")
    english = document.add_table(rows=0, cols=2)
    for name, label in ENGLISH_LABELS.items():
        cells = english.add_row().cells
        cells[0].text, cells[1].text = label, ENGLISH_VALUES[name]
    buffer = io.BytesIO()
    document.save(buffer)

    mail = EmailMessage()
    mail["From"] = "林晓东 <lin.xd@ecnu.edu.cn>"
    mail["To"] = "min.gao@aminer.cn"
    mail["Subject"] = "申报 SMP-智谱基金"
    mail["Message-ID"] = "<english-form-1@ecnu.edu.cn>"
    mail["Date"] = format_datetime(ARRIVAL)
    mail.set_content("高老师您好，申报表见附件。")
    mail.add_attachment(
        buffer.getvalue(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="申报表-林晓东.docx",
    )
    return mail.as_bytes()


def with_english_labels(raw: dict[str, Any]) -> dict[str, Any]:
    fixed = copy.deepcopy(raw)
    for item in fixed["call"][0]["field"]:
        if item["name"] in ENGLISH_LABELS:
            item["labels"].append(ENGLISH_LABELS[item["name"]])
    return fixed


def message_by_id(bot: Worker, message_id: str) -> Message:
    with bot.store.sessions() as session:
        message = session.scalars(select(Message).where(Message.message_id == message_id)).one()
        session.expunge(message)
        return message


def acks_to(sink: SmtpSink, original_id: str) -> list[email.message.EmailMessage]:
    parsed = [email.message_from_bytes(m.raw, policy=email.policy.default) for m in sink.received]
    return [m for m in parsed if m.get("In-Reply-To", "") == original_id]


def events_of(bot: Worker, pk: int) -> list[Event]:
    with bot.store.sessions() as session:
        return list(session.scalars(select(Event).where(Event.message_pk == pk).order_by(Event.id)))


def count(bot: Worker, model: type[Any]) -> int:
    with bot.store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def configure(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, database_url: str
) -> Callable[..., tuple[Path, Settings]]:
    """Write a configuration file (optionally changed by ``edit``) that the CLI and Worker both use."""

    def write(edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda raw: raw) -> tuple[Path, Settings]:
        raw = edit(make_config(tmp_path, imap_server, smtp_sink, database_url))
        path = tmp_path / "mailbot.toml"
        return path, write_config(raw, path)

    return write


def queue_one(
    imap_server: ImapServer, corpus_dir: Path, configure: Callable[..., tuple[Path, Settings]], name: str
) -> tuple[dict[str, Any], Path, Settings, Message]:
    """One corpus message through a run: its truth, the configuration file, the settings, its record."""
    truth = load_corpus(imap_server, corpus_dir, [name])[name]
    config, settings = configure()
    with Worker(settings) as bot:
        bot.single_pass()
        message = message_by_id(bot, truth["message_id"])
    return truth, config, settings, message


def cli_run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_corrupt_form_lands_in_the_queue_folder(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth = load_corpus(imap_server, corpus_dir, [CORRUPT_SMP])[CORRUPT_SMP]
    config, settings = configure()
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
        message = message_by_id(bot, truth["message_id"])
        folder = bot.review.folder_of(message)
    assert (message.state, message.outcome, message.reason) == (MessageState.REVIEW, "unreadable", "corrupt")
    assert message.reference is not None

    raw = (corpus_dir / f"{CORRUPT_SMP}.eml").read_bytes()
    assert (folder / "message.eml").read_bytes() == raw
    form_name = truth["form"]["attachment"]
    assert sorted(p.name for p in (folder / "attachments").iterdir()) == [form_name]
    assert (folder / "attachments" / form_name).stat().st_size == truth["mail"]["attachments"][0]["bytes"]
    reason = json.loads((folder / "reason.json").read_text(encoding="utf-8"))
    assert reason["reason"] == "corrupt"
    assert reason["message_id"] == truth["message_id"]
    assert reason["reference"] == message.reference
    assert reason["call"] == truth["call"]
    assert reason["from"] == truth["mail"]["from"]
    assert reason["sentence"] and reason["sentence_zh"]
    assert not (folder / "closed.json").exists()

    for directory in (settings.queue_dir, folder, folder / "attachments"):
        assert mode(directory) == 0o700, directory
    for file in [folder / "message.eml", folder / "reason.json", *(folder / "attachments").iterdir()]:
        assert mode(file) == 0o600, file
    assert not [p for p in settings.queue_dir.iterdir() if p.name.startswith(".")], "no staging folder is left"

    # the applicant was told once that the file could not be opened
    assert len(acks_to(smtp_sink, truth["message_id"])) == 1

    code, out, _ = cli_run(capsys, config, "queue", "list")
    assert code == 0
    assert message.reference in out and "corrupt" in out and "1 item(s)" in out
    code, out, _ = cli_run(capsys, config, "queue", "show", message.reference, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["reason"] == "corrupt" and shown["state"] == "review"
    assert shown["folder"] == str(folder)
    assert [a["filename"] for a in shown["attachments"]] == [form_name]
    code, _, err = cli_run(capsys, config, "queue", "show", "SMP24-9999")
    assert code == 1 and "no message 'SMP24-9999'" in err


def test_retry_after_a_configuration_fix_accepts_and_acknowledges(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    imap_server.append("min.gao@aminer.cn", english_form_mail(), ARRIVAL)
    message_id = "<english-form-1@ecnu.edu.cn>"
    config, settings = configure()
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
        before = message_by_id(bot, message_id)
    assert (before.state, before.outcome, before.reason) == (MessageState.REVIEW, "unreadable", "no-fields")

    config, settings = configure(with_english_labels)
    code, out, _ = cli_run(capsys, config, "queue", "--by", "alice", "retry", before.reference or "")
    assert code == 0, out
    assert f"{message_id}: accepted ({before.reference})" in out
    with Worker(settings) as bot:
        after = message_by_id(bot, message_id)
        with bot.store.sessions() as session:
            application = session.scalars(select(Application)).one()
        events = events_of(bot, after.id)
        folder = bot.review.folder_of(after)
        assert "The review queue is empty." in list_items(bot)
    assert (after.state, after.outcome, after.reference) == (MessageState.DONE, "accepted", before.reference)
    assert {k: application.fields[k] for k in ENGLISH_VALUES} == ENGLISH_VALUES
    assert any(e.actor == "alice" for e in events), [(e.kind, e.actor) for e in events]
    closed = json.loads((folder / "closed.json").read_text(encoding="utf-8"))
    assert closed["by"] == "alice" and "accepted" in closed["outcome"]

    acks = acks_to(smtp_sink, message_id)
    assert len(acks) == 2, "first that the form could not be read, then that it was received"
    assert "Received" in str(acks[-1]["Subject"]) and str(before.reference) in str(acks[-1]["Subject"])
    assert acks[0]["Message-ID"] != acks[1]["Message-ID"]


def test_a_retry_that_ends_as_before_does_not_answer_again(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    imap_server.append("min.gao@aminer.cn", english_form_mail(), ARRIVAL)
    config, settings = configure()
    with Worker(settings) as bot:
        bot.single_pass()
        reference = message_by_id(bot, "<english-form-1@ecnu.edu.cn>").reference or ""
    code, out, _ = cli_run(capsys, config, "queue", "retry", "--all")
    assert code == 0 and "unreadable" in out
    code, out, _ = cli_run(capsys, config, "queue", "list")
    assert reference in out and "no-fields" in out
    assert len(acks_to(smtp_sink, "<english-form-1@ecnu.edu.cn>")) == 1


def test_resolve_with_typed_fields_makes_an_application(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    typed = {
        "project_title": "面向软件工程的大模型代码评测",
        "applicant_name": "沈 欣怡",
        "institution": "中国科学院软件研究所",
        "email": "ShenX@iscas.ac.cn",
        "topic": "课题3.2：自动评测与作文批改",
    }
    args = [arg for name, value in typed.items() for arg in ("--field", f"{name}={value}")]
    code, _, err = cli_run(capsys, config, "queue", "resolve", queued.reference or "", "--field", "colour=blue")
    assert code == 1 and "unknown field(s) colour" in err
    code, out, _ = cli_run(capsys, config, "queue", "--by", "carol", "resolve", queued.reference or "", *args)
    assert code == 0 and "accepted" in out

    with Worker(settings) as bot:
        message = message_by_id(bot, truth["message_id"])
        with bot.store.sessions() as session:
            application = session.scalars(select(Application)).one()
        events = events_of(bot, message.id)
        folder = bot.review.folder_of(message)
    assert (message.state, message.outcome) == (MessageState.DONE, "accepted")
    assert application.fields["applicant_name"] == "沈欣怡"
    assert application.fields["email"] == "shenx@iscas.ac.cn"
    assert application.fields["topic"] == "3.2"
    assert application.status == "accepted" and application.missing == []
    assert any(e.actor == "carol" for e in events)
    assert json.loads((folder / "closed.json").read_text(encoding="utf-8"))["by"] == "carol"
    acks = acks_to(smtp_sink, truth["message_id"])
    assert len(acks) == 2 and "Received" in str(acks[-1]["Subject"])

    # a second resolve finds nothing in the queue
    with Worker(settings) as bot, pytest.raises(Exception, match="not in the review queue"):
        resolve_item(bot, message.id, ["project_title=x"], "carol")


def test_reject_closes_the_item_with_who_and_why(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_CAAI)
    sent_before = len(smtp_sink.received)
    code, out, _ = cli_run(capsys, config, "queue", "--by", "bob", "reject", queued.reference or "", "--reason", "spam")
    assert code == 0 and f"closed {queued.id}" in out
    with Worker(settings) as bot:
        message = message_by_id(bot, truth["message_id"])
        events = events_of(bot, message.id)
        folder = bot.review.folder_of(message)
        assert "The review queue is empty." in list_items(bot)
        with pytest.raises(Exception, match="not in the review queue"):
            reject_item(bot, message.id, "again", False, "bob")
    assert message.state == MessageState.DONE
    assert (message.decision or {})["rule"] == "rejected-by-admin"
    rejected = [e for e in events if e.kind == "queue-rejected"]
    assert len(rejected) == 1 and rejected[0].actor == "bob" and rejected[0].detail["reason"] == "spam"
    closed = json.loads((folder / "closed.json").read_text(encoding="utf-8"))
    assert closed["by"] == "bob" and "spam" in closed["outcome"]
    assert (folder / "message.eml").exists(), "the files stay for the record"
    assert len(smtp_sink.received) == sent_before, "no notice without --notify"


def test_a_crash_mid_retry_leaves_the_item_in_the_queue(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    configure: Callable[..., tuple[Path, Settings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imap_server.append("min.gao@aminer.cn", english_form_mail(), ARRIVAL)
    message_id = "<english-form-1@ecnu.edu.cn>"
    _, settings = configure()
    with Worker(settings) as bot:
        bot.single_pass()
    _, fixed = configure(with_english_labels)
    original = Outbox.answer

    def ack_then_crash(self: Outbox, *args: Any) -> bool:
        original(self, *args)  # the outbox row and the application exist in the transaction…
        raise RuntimeError("power cut")  # …when it dies

    with Worker(fixed) as bot:
        queued = message_by_id(bot, message_id)
        folder = bot.review.folder_of(queued)
        reason_before = (folder / "reason.json").read_bytes()
        outbox_before, sent_before = count(bot, OutboxMail), len(smtp_sink.received)
        monkeypatch.setattr(Outbox, "answer", ack_then_crash)
        results = retry_items(bot, [find_item(bot, queued.reference or "")], "dave")
        assert len(results) == 1 and isinstance(results[0], str)
        assert "still in the queue" in results[0] and "power cut" in results[0]
        after = message_by_id(bot, message_id)
        assert (after.state, after.outcome, after.reason) == (MessageState.REVIEW, "unreadable", "no-fields")
        assert after.reference == queued.reference and after.decision == queued.decision
        assert count(bot, Application) == 0
        assert count(bot, OutboxMail) == outbox_before
        assert len(smtp_sink.received) == sent_before
        assert (folder / "reason.json").read_bytes() == reason_before
        assert not (folder / "closed.json").exists()
        assert show_item(bot, after.id)

        monkeypatch.setattr(Outbox, "answer", original)
        (result,) = retry_items(bot, [after.id], "dave")
        assert not isinstance(result, str) and result.outcome == "accepted"
    assert len(acks_to(smtp_sink, message_id)) == 2


def test_resolve_refuses_a_message_that_is_not_queued(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    accepted = "smp-001"
    truth = load_corpus(imap_server, corpus_dir, [accepted])[accepted]
    settings = parse_settings(make_config(tmp_path, imap_server, smtp_sink), "test")
    with Worker(settings) as bot:
        bot.single_pass()
        done = message_by_id(bot, truth["message_id"])
        assert done.state == MessageState.DONE
        (result,) = retry_items(bot, [done.id], "erin")
        assert result == f"{done.reference}: not in the review queue (it is done)"
        after = message_by_id(bot, truth["message_id"])
        assert (after.outcome, after.attempts) == (done.outcome, done.attempts)


def test_reject_with_notify_tells_the_sender_once(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_CAAI)
    reason = "请将申报表另存为新的 .docx 后重新发送"
    code, out, _ = cli_run(
        capsys, config, "queue", "--by", "bob", "reject", queued.reference or "", "--reason", reason, "--notify"
    )
    assert code == 0 and "told the applicant" in out
    answers = acks_to(smtp_sink, truth["message_id"])
    assert len(answers) == 2, "the unreadable answer, then the notice"
    notice = answers[-1]
    assert [str(a) for a in notice["To"].addresses] == [truth["mail"]["from"]]
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None and reason in body.get_content()
    with Worker(settings) as bot:
        assert message_by_id(bot, truth["message_id"]).state == MessageState.DONE


def test_a_failed_reject_leaves_the_item_open(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    truth = load_corpus(imap_server, corpus_dir, [CORRUPT_CAAI])[CORRUPT_CAAI]
    _, settings = configure()

    def broken_notice(*_args: object) -> bool:
        raise RuntimeError("template missing")

    with Worker(settings) as bot:
        bot.single_pass()
        queued = message_by_id(bot, truth["message_id"])
        monkeypatch.setattr(bot.pipeline.decider.outbox, "closed_notice", broken_notice)
        with pytest.raises(RuntimeError, match="template missing"):
            reject_item(bot, queued.id, "spam", True, "bob")
        after = message_by_id(bot, truth["message_id"])
        assert after.state == MessageState.REVIEW and after.decision == queued.decision
        assert not (bot.review.folder_of(after) / "closed.json").exists()
        assert [e.kind for e in events_of(bot, after.id)].count("queue-rejected") == 0
        assert str(queued.reference) in list_items(bot)
