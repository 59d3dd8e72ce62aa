"""The coordinators' daily digest: its content from a known database, its mail, once-per-day queueing."""

from __future__ import annotations

import argparse
import email
import email.policy
import io
import logging
import threading
import tomllib
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailbot.config import Settings, example_config_text, parse_settings
from mailbot.digest.attention import opening_lines
from mailbot.digest.command import add_digest_command, cmd_digest
from mailbot.digest.contents import build_digest
from mailbot.digest.queueing import queue_digest
from mailbot.digest.render import compose_digest, digest_message_id, duration_words, render_digest
from mailbot.embedded import SmtpSink
from mailbot.runners.digests import DigestRunner
from mailbot.runners.supervision import supervise
from mailbot.scheduling import MISFIRE_GRACE, DigestScheduler
from storage import Storage
from storage.archive import RawArchive
from storage.db import make_engine, transaction, upgrade
from storage.events import EventKind
from storage.models import (
    Applicant,
    Application,
    DigestRun,
    Event,
    Message,
    MessageState,
    OutboxMail,
    OutboxState,
    SendVerdict,
)
from templates import TemplateSet

BEIJING = ZoneInfo("Asia/Shanghai")
CALL = "smp-zhipu-2024"
DAY = date(2024, 9, 2)
NOW = datetime(2024, 9, 2, 8, 0, tzinfo=BEIJING)
LAST_DIGEST = datetime(2024, 9, 1, 8, 0, tzinfo=BEIJING)
HOSTILE_TITLE = "<script>alert(1)</script>多智能体协作"


def bj(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=BEIJING)


def make_settings(data_dir: Path, database_url: str | None = None, **sections: dict[str, Any]) -> Settings:
    raw = tomllib.loads(example_config_text())
    raw["storage"] = {"url": database_url or f"sqlite:///{data_dir / 'mailbot.db'}", "data_dir": str(data_dir)}
    raw["mailbox"] = []
    raw["smtp"] = {"host": "127.0.0.1", "port": 25, "tls": "none", "saves_to_sent": True}
    for name, section in sections.items():
        raw[name] = {**raw.get(name, {}), **section}
    return parse_settings(raw, "digest test configuration")


def make_store(settings: Settings) -> Storage:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return Storage(engine, RawArchive(settings.archive_dir))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[Storage]:
    created = make_store(settings)
    yield created
    created.engine.dispose()


# ---------------------------------------------------------------------------------------------- the state


class World:
    """Builds messages, applications and outbox rows directly with the ORM, as the pipeline leaves them."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.count = 0

    def message(
        self,
        outcome: str | None,
        reference: str | None,
        decided: datetime | None,
        fields: dict[str, Any] | None = None,
        call_id: str = CALL,
        state: str = MessageState.DONE,
        reason: str | None = None,
        sender: tuple[str, str] = ("", "someone@example.edu.cn"),
        subject: str = "申报材料",
        body: str = "",
    ) -> Message:
        self.count += 1
        arrival = (decided or NOW) - timedelta(minutes=5)
        form = {"fields": {k: {"value": v} for k, v in fields.items()}} if fields is not None else None
        message = Message(
            message_key=f"<m{self.count}@example.edu.cn>",
            message_id=f"<m{self.count}@example.edu.cn>",
            sha256=f"{self.count:064x}",
            size=1000,
            mailbox="smp",
            call_id=call_id,
            arrival=arrival,
            recorded_at=arrival,
            source="import",
            subject=subject,
            from_addr=sender[1],
            state=state,
            attempts=1,
            outcome=outcome,
            reason=reason,
            reference=reference,
            decision={"outcome": outcome},
            reading={
                "envelope": {"from_name": sender[0], "from_addr": sender[1], "subject": subject, "body_text": body},
                "form": form,
            },
            decided_at=decided,
        )
        self.session.add(message)
        self.session.flush()
        return message

    def application(
        self,
        message: Message,
        status: str,
        fields: dict[str, Any],
        flags: tuple[str, ...] = (),
        duplicate_of: Message | None = None,
        institution_key: str | None = None,
    ) -> Application:
        applicant = Applicant(
            call_id=message.call_id,
            name=fields.get("applicant_name"),
            institution_key=institution_key,
            email=fields.get("email"),
        )
        self.session.add(applicant)
        self.session.flush()
        application = Application(
            call_id=message.call_id,
            application_key=message.message_key,
            applicant_id=applicant.id,
            current_message_pk=message.id,
            status=status,
            duplicate_of_key=duplicate_of.message_key if duplicate_of else None,
            project_title=fields.get("project_title"),
            fields=fields,
            missing=[name for name in ("topic",) if not fields.get("topic")],
            flags=list(flags),
            created_at=message.arrival,
            updated_at=message.arrival,
        )
        self.session.add(application)
        self.session.flush()
        message.application_id = application.id
        return application

    def ack(self, message: Message, state: str, **extra: Any) -> OutboxMail:
        mail = OutboxMail(
            kind="ack",
            message_pk=message.id,
            call_id=message.call_id,
            mailbox="smp",
            sender="min.gao@aminer.cn",
            recipients=[message.from_addr],
            message_id=f"<ack.{message.id}@aminer.cn>",
            raw=b"x",
            state=state,
            attempts=1,
            next_attempt_at=message.decided_at,
            created_at=message.decided_at,
            **extra,
        )
        self.session.add(mail)
        return mail


def form(name: str, institution: str, title: str, topic: str | None, **more: Any) -> dict[str, Any]:
    return {
        "applicant_name": name,
        "institution": institution,
        "project_title": title,
        "topic": topic,
        "email": f"{name}@example.edu.cn",
        **more,
    }


def populate(store: Storage, previous_digest: bool = True) -> None:
    """The smp call on the morning of 2 September 2024; the last digest went out on 1 September."""
    with transaction(store.sessions) as session:
        world = World(session)
        # decided before the last digest
        zhang_v1 = form("张伟", "清华大学", "大模型作文评测", "3.2", degree="博士")
        m1 = world.message("accepted", "SMP24-0001", bj(8, 20, 10), zhang_v1)
        li = form("李娜", "北大", "临床问答的可信评估", "1.1", degree="硕士")
        m2 = world.message("accepted", "SMP24-0002", bj(8, 21, 10), li)
        world.application(m2, "accepted", li, flags=("eligibility:no-phd",))
        world.message("correspondence", "SMP24-0003", bj(8, 22, 9), subject="旧的问题")
        world.message("ignored", None, bj(8, 23, 9), subject="自动回复: 休假中")
        world.message("unreadable", "SMP24-0004", bj(8, 30, 10), state=MessageState.REVIEW, reason="encrypted")
        # decided since the last digest
        wang = form("王芳", "清华", "个性化辅导的学情诊断", "3.2", degree="博士")
        m5 = world.message("accepted", "SMP24-0005", bj(9, 1, 9), wang)
        world.application(m5, "accepted", wang)
        zhang_v2 = {**zhang_v1, "project_title": "大模型作文自动评测（修订）"}
        m6 = world.message("revision", "SMP24-0006", bj(9, 1, 10), zhang_v2)
        app1 = world.application(m1, "accepted", zhang_v1)
        app1.current_message_pk, app1.fields, app1.project_title = m6.id, zhang_v2, zhang_v2["project_title"]
        li_second = form("李娜", "北京大学", HOSTILE_TITLE, "9.1", degree="硕士")
        m7 = world.message("duplicate", "SMP24-0007", bj(9, 1, 11), li_second)
        world.application(m7, "duplicate", li_second, flags=(), duplicate_of=m2)
        zhao = form("赵强", "复旦大学", "金融风险识别", None)
        m8 = world.message("incomplete", "SMP24-0008", bj(9, 1, 12), zhao)
        world.application(m8, "incomplete", zhao, flags=("eligibility:degree-unknown",))
        world.message(
            "correspondence",
            "SMP24-0009",
            bj(9, 1, 14),
            sender=("陈老师", "chen@pku.edu.cn"),
            subject="关于申报的问题",
            body="老师您好：\n\n请问申报书是否需要盖章？\n谢谢！\n陈\n\n-----原始邮件-----\n> 已收到",
        )
        world.message("unreadable", "SMP24-0010", bj(9, 1, 20), state=MessageState.REVIEW, reason="scanned")
        world.message("no_attachment", "SMP24-0011", bj(9, 1, 21))
        # not part of this digest: undecided, decided after "now", or another call
        world.message(None, None, None, state=MessageState.RECEIVED)
        world.message("correspondence", "SMP24-0012", bj(9, 2, 9), subject="来得太晚")
        other = form("孙丽", "浙江大学", "越狱攻击", "ANT-18")
        m_other = world.message("accepted", "ANT24-0001", bj(9, 1, 9), other, call_id="caai-ant-2024")
        world.application(m_other, "accepted", other)
        # acknowledgements: one sent, one bounced since the last digest, one failed before it, one whose
        # send a stop interrupted as the server took it (presumed delivered), one such found in Sent
        world.ack(m5, OutboxState.SENT)
        world.ack(m1, OutboxState.SENT, bounced_at=bj(9, 1, 12), last_reply="250 accepted")
        world.ack(m2, OutboxState.FAILED, sending_since=bj(8, 25, 10), last_reply="550 5.1.1 no such user")
        for message, verdict in ((m6, SendVerdict.PRESUMED), (m7, SendVerdict.FOUND)):
            mail = world.ack(
                message, OutboxState.SENT, sending_since=bj(9, 1, 10, 5), last_reply=f"{verdict} after a stop"
            )
            session.flush()
            detail = {"outbox_id": mail.id, "verdict": verdict.value}
            session.add(
                Event(
                    at=bj(9, 1, 11),
                    kind=EventKind.OUTBOX_RECOVERED,
                    actor="sender",
                    message_pk=message.id,
                    detail=detail,
                )
            )
        if previous_digest:
            session.add(DigestRun(call_id=CALL, day=date(2024, 9, 1), created_at=LAST_DIGEST, late=False))


@pytest.fixture
def populated(store: Storage) -> Storage:
    populate(store)
    return store


def digest_of(store: Storage, settings: Settings, now: datetime = NOW, day: date = DAY, late: bool = False) -> Any:
    with store.sessions() as session:
        return build_digest(session, settings, settings.call_by_id(CALL), day, now, late=late)


# ---------------------------------------------------------------------------------------------- content


def test_digest_counts_by_outcome_in_total_and_since_the_last_digest(populated: Storage, settings: Settings) -> None:
    data = digest_of(populated, settings)
    assert data.since == LAST_DIGEST
    assert data.totals == {
        "accepted": 3,
        "incomplete": 1,
        "late": 0,
        "revision": 1,
        "duplicate": 1,
        "no_attachment": 1,
        "unreadable": 2,
        "correspondence": 2,
        "ignored": 1,
    }
    assert data.new == {
        "accepted": 1,
        "incomplete": 1,
        "late": 0,
        "revision": 1,
        "duplicate": 1,
        "no_attachment": 1,
        "unreadable": 1,
        "correspondence": 1,
        "ignored": 0,
    }
    assert (data.total_count, data.new_count, data.applications) == (12, 7, 5)


def test_digest_charts_topics_and_institutions_of_current_applications(populated: Storage, settings: Settings) -> None:
    data = digest_of(populated, settings)
    by_direction = {group.direction.label: group for group in data.directions}
    assert len(by_direction) == 10  # the nine directions of the call and the unknown topic
    education = by_direction["大模型+教育"]
    assert (education.direction.count, education.direction.width) == (2, 100)
    assert [(t.code, t.count, t.width) for t in education.topics] == [("3.1", 0, 0), ("3.2", 2, 100), ("3.3", 0, 0)]
    assert by_direction["大模型+医疗健康"].direction.count == 1
    assert by_direction["大模型+医疗健康"].direction.width == 50
    assert by_direction["智能体"].topics[0].count == 1
    assert by_direction["具身智能"].direction.count == 0
    assert [(t.code, t.count) for t in by_direction[""].topics] == [(None, 1)]
    # "清华" and "北大" are the call's aliases; the caai application is not counted
    assert [(bar.label, bar.count, bar.width) for bar in data.institutions] == [
        ("北京大学", 2, 100),
        ("清华大学", 2, 100),
        ("复旦大学", 1, 50),
    ]


def test_digest_lists_new_submissions_and_what_needs_a_person(populated: Storage, settings: Settings) -> None:
    data = digest_of(populated, settings)
    assert [(s.reference, s.outcome, s.applicant, s.institution, s.topic) for s in data.submissions] == [
        ("SMP24-0005", "accepted", "王芳", "清华", "3.2 自动评测与作文批改"),
        ("SMP24-0006", "revision", "张伟", "清华大学", "3.2 自动评测与作文批改"),
        ("SMP24-0007", "duplicate", "李娜", "北京大学", "9.1 多智能体协作与社会行为模拟"),
        ("SMP24-0008", "incomplete", "赵强", "复旦大学", ""),
    ]
    assert data.submissions[1].title == "大模型作文自动评测（修订）"

    [duplicate] = data.duplicates
    assert (duplicate.reference, duplicate.applicant, duplicate.existing_reference) == (
        "SMP24-0007",
        "李娜",
        "SMP24-0002",
    )
    assert duplicate.existing_title == "临床问答的可信评估"

    assert [(f.reference, f.flags) for f in data.flagged] == [
        ("SMP24-0002", ("eligibility:no-phd",)),
        ("SMP24-0008", ("eligibility:degree-unknown",)),
    ]

    [letter] = data.correspondence
    assert letter.sender == "陈老师 <chen@pku.edu.cn>"
    assert letter.subject == "关于申报的问题"
    assert letter.excerpt == "老师您好： 请问申报书是否需要盖章？ 谢谢！"

    assert [(item.reference, item.reason) for item in data.review] == [
        ("SMP24-0004", "encrypted"),
        ("SMP24-0010", "scanned"),
    ]
    assert data.review_oldest_age == NOW - bj(8, 30, 10)

    assert [(p.reference, p.problem, p.new) for p in data.ack_problems] == [
        ("SMP24-0001", "bounced", True),
        ("SMP24-0006", "uncertain", True),
        ("SMP24-0002", "failed", False),
    ]
    assert data.ack_problems[2].detail == "550 5.1.1 no such user"
    # duplicates 1, flags 2, correspondence 1, review 2, new bounce 1, new uncertain answer 1
    assert data.attention_count == 8


def test_first_digest_counts_everything_as_new(store: Storage, settings: Settings) -> None:
    populate(store, previous_digest=False)
    data = digest_of(store, settings)
    assert data.since is None
    assert data.new == data.totals
    assert all(problem.new for problem in data.ack_problems)


def test_countdown_until_the_deadline_then_closed(populated: Storage, settings: Settings) -> None:
    before = digest_of(populated, settings)
    assert before.countdown.remaining == timedelta(days=6, hours=16)
    assert not before.countdown.closed
    after = digest_of(populated, settings, now=bj(9, 9, 8), day=date(2024, 9, 9))
    assert after.countdown.closed
    assert duration_words(timedelta(days=6, hours=16, minutes=5)).zh == "6 天 16 小时"
    assert duration_words(timedelta(days=1, hours=1)).en == "1 day 1 hour"
    assert duration_words(timedelta(minutes=42)).en == "42 minutes"


def test_opening_lines_stop_at_the_quoted_message() -> None:
    body = "Dear office,\n\nIs a stamp needed?\n\nOn Mon, 2 Sep 2024, fund wrote:\n> Received"
    assert opening_lines(body) == "Dear office, Is a stamp needed?"
    assert opening_lines("a\nb\nc\nd") == "a b c"
    assert opening_lines("") == ""


# ---------------------------------------------------------------------------------------------- words and mail


def test_rendered_digest_names_everything_chinese_first_and_escapes_submitted_text(
    populated: Storage, settings: Settings
) -> None:
    data = digest_of(populated, settings, late=True)
    subject, text, html = render_digest(data, TemplateSet())
    assert subject.startswith("【补发】【每日摘要】SMP-智谱 AI 大模型交叉学科基金（第二期） · 2024年9月2日")
    assert "新增 7 · 待处理 8" in subject
    assert subject.endswith("Daily digest 2024-09-02 (late): 7 new, 8 to handle")
    for body in (text, html):
        for expected in (
            "SMP24-0005",
            "王芳",
            "陈老师",
            "请问申报书是否需要盖章",
            "SMP24-0010",
            "550 5.1.1",
            "可能未送达",
        ):
            assert expected in body
        assert body.index("本摘要为补发" if body is html else "【补发】") < body.index(
            "This digest is late" if body is html else "(Late)"
        )
        assert "6 天 16 小时" in body
        assert "北京大学" in body
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;多智能体协作" in html
    assert "<img" not in html and "src=" not in html and "http" not in html.replace("http-equiv", "")
    assert 'width="100%"' in html and 'style="width:50%;"' in html  # the bars are table cells
    assert "未见博士学位" in html and "no doctorate given" in html
    assert "1 day" not in text  # the oldest review item has waited two days and 22 hours
    assert "2 天 22 小时" in text


def test_on_time_digest_does_not_say_it_is_late(populated: Storage, settings: Settings) -> None:
    subject, text, html = render_digest(digest_of(populated, settings), TemplateSet())
    assert "补发" not in subject + text + html
    assert "late" not in subject


def read_mail(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def workbook_of(mail: EmailMessage) -> tuple[str, openpyxl.Workbook]:
    [attachment] = list(mail.iter_attachments())
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return attachment.get_filename() or "", openpyxl.load_workbook(io.BytesIO(payload))


def test_composed_digest_goes_to_the_coordinators_with_the_workbook(populated: Storage, settings: Settings) -> None:
    from mailbot.export import to_xlsx

    call = settings.call_by_id(CALL)
    data = digest_of(populated, settings)
    with populated.sessions() as session:
        workbook = to_xlsx(session, CALL)
    message_id = digest_message_id(call, DAY)
    mail = read_mail(bytes(compose_digest(data, TemplateSet(), workbook, message_id)))
    assert mail["To"] == "min.gao@aminer.cn"
    assert mail["From"].addresses[0].addr_spec == "min.gao@aminer.cn"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"] == message_id == digest_message_id(call, DAY)
    assert message_id != digest_message_id(call, DAY + timedelta(days=1))
    assert "每日摘要" in mail["Subject"]
    plain, rich = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and rich is not None
    assert "王芳" in plain.get_content() and "王芳" in rich.get_content()

    name, book = workbook_of(mail)
    assert name == "smp-zhipu-2024-2024-09-02.xlsx"
    sheet = book["Applications"]
    header = [cell.value for cell in sheet[2]]  # the coordinators' labels above, the keys in row 2
    rows = [dict(zip(header, [cell.value for cell in row], strict=True)) for row in sheet.iter_rows(min_row=3)]
    assert [row["reference"] for row in rows] == ["SMP24-0002", "SMP24-0005", "SMP24-0001", "SMP24-0007", "SMP24-0008"]
    zhang = rows[2]
    assert (zhang["current_reference"], zhang["status"], zhang["applicant_name"]) == ("SMP24-0006", "accepted", "张伟")
    assert zhang["project_title"] == "大模型作文自动评测（修订）"
    assert zhang["topic"] == "3.2" and zhang["call"] == CALL
    li_second = rows[3]
    assert li_second["status"] == "duplicate" and li_second["duplicate_of"] == "<m2@example.edu.cn>"
    assert li_second["project_title"] == HOSTILE_TITLE
    assert rows[0]["flags"] == "eligibility:no-phd"
    assert rows[4]["missing"] == "topic" and rows[4]["topic"] is None
    messages = book["Messages"]
    message_header = [cell.value for cell in messages[2]]
    outcomes = [row[message_header.index("outcome")].value for row in messages.iter_rows(min_row=3)]
    # every decided message of the call, the one decided after "now" included (the workbook is as of sending)
    assert len(outcomes) == 13 and outcomes.count("correspondence") == 3
    assert "ANT24-0001" not in [row[message_header.index("reference")].value for row in messages.iter_rows(min_row=3)]


# ---------------------------------------------------------------------------------------------- once a day


def digest_rows(store: Storage) -> tuple[int, int]:
    with store.sessions() as session:
        runs = session.scalar(select(func.count()).select_from(DigestRun).where(DigestRun.day == DAY))
        mails = session.scalar(select(func.count()).select_from(OutboxMail).where(OutboxMail.kind == "digest"))
        return int(runs or 0), int(mails or 0)


def test_queue_digest_once_per_call_and_day_across_a_restart(populated: Storage, settings: Settings) -> None:
    call = settings.call_by_id(CALL)
    first = queue_digest(populated, settings, call, DAY, NOW, late=False)
    assert first is not None
    assert queue_digest(populated, settings, call, DAY, NOW + timedelta(minutes=1), late=False) is None

    populated.engine.dispose()
    restarted = make_store(settings)  # a new process: new engine, new scheduler
    woken: list[bool] = []
    scheduler = DigestScheduler(settings, restarted, TemplateSet(), lambda: woken.append(True))
    assert scheduler.catch_up(NOW + timedelta(hours=1)) == []
    assert not woken
    assert digest_rows(restarted) == (1, 1)

    with restarted.sessions() as session:
        run = session.get_one(DigestRun, (CALL, DAY))
        mail = session.get_one(OutboxMail, first)
        assert (run.outbox_id, run.late, run.created_at) == (first, False, NOW)
        assert (mail.kind, mail.state, mail.recipients, mail.mailbox) == (
            "digest",
            "pending",
            ["min.gao@aminer.cn"],
            None,
        )
        assert session.scalar(select(Event.kind).where(Event.kind == "digest-queued")) == "digest-queued"
    # the next day's digest only counts what was decided after this one
    with restarted.sessions() as session:
        tomorrow = build_digest(session, settings, call, DAY + timedelta(days=1), NOW + timedelta(days=1))
    assert tomorrow.since == NOW
    assert tomorrow.new_count == 1  # the correspondence decided at 09:00
    restarted.engine.dispose()


@pytest.mark.postgres
def test_two_workers_on_one_postgres_database_queue_one_digest(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path / "data", postgres_url)
    stores = [make_store(settings), make_store(settings)]
    populate(stores[0])
    call = settings.call_by_id(CALL)
    start = threading.Barrier(2)
    results: list[int | None] = []
    errors: list[BaseException] = []

    def worker(store: Storage) -> None:
        try:
            start.wait(timeout=10)
            results.append(queue_digest(store, settings, call, DAY, NOW, late=False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 2 and sum(r is not None for r in results) == 1
    assert digest_rows(stores[0]) == (1, 1)
    for store in stores:
        store.engine.dispose()


def scheduler_for(settings: Settings, store: Storage) -> tuple[DigestScheduler, list[bool]]:
    woken: list[bool] = []
    return DigestScheduler(settings, store, TemplateSet(), lambda: woken.append(True)), woken


def test_missed_digest_is_caught_up_at_start_and_says_it_is_late(populated: Storage, settings: Settings) -> None:
    scheduler, woken = scheduler_for(settings, populated)
    assert scheduler.catch_up(bj(9, 2, 7, 59)) == []  # before the digest time: the cron job will do it
    assert digest_rows(populated) == (0, 0)

    queued = scheduler.catch_up(bj(9, 2, 11, 30))
    assert len(queued) == 1 and woken == [True]
    with populated.sessions() as session:
        run = session.get_one(DigestRun, (CALL, DAY))
        assert run.late and run.outbox_id == queued[0]
        raw = session.get_one(OutboxMail, queued[0]).raw
    mail = read_mail(raw)
    assert mail["Subject"].startswith("【补发】【每日摘要】")
    plain = mail.get_body(("plain",))
    assert plain is not None and "系统未在运行" in plain.get_content()
    assert "was not running at the digest time (08:00 Beijing time)" in plain.get_content()

    assert scheduler.catch_up(bj(9, 2, 12)) == []  # once a day
    assert digest_rows(populated) == (1, 1)


def test_no_scheduled_digest_outside_the_calls_season(populated: Storage, settings: Settings) -> None:
    scheduler, _ = scheduler_for(settings, populated)
    call = settings.call_by_id(CALL)
    assert scheduler.in_season(call, date(2024, 8, 1)) and scheduler.in_season(call, date(2024, 9, 23))
    assert not scheduler.in_season(call, date(2024, 7, 31))
    assert not scheduler.in_season(call, date(2024, 9, 24))
    assert scheduler.catch_up(bj(10, 1, 9)) == []


def test_scheduled_run_covers_the_latest_due_day_and_knows_when_it_is_late(
    populated: Storage, settings: Settings
) -> None:
    clock = [bj(9, 3, 7)]  # woke after a long sleep, before 3 September's digest time
    scheduler = DigestScheduler(settings, populated, TemplateSet(), lambda: None, clock=lambda: clock[0])
    assert scheduler.run_scheduled(CALL) is not None
    clock[0] = bj(9, 3, 8, 0)
    assert scheduler.run_scheduled(CALL) is not None
    with populated.sessions() as session:
        runs = {run.day: run.late for run in session.scalars(select(DigestRun).where(DigestRun.call_id == CALL))}
    assert runs == {date(2024, 9, 1): False, date(2024, 9, 2): True, date(2024, 9, 3): False}


def test_cron_job_fires_at_the_digest_time(tmp_path: Path) -> None:
    """The real scheduler: a call open today, the digest time two seconds from now."""
    zone = ZoneInfo("UTC")
    due = datetime.now(zone).replace(microsecond=0) + timedelta(seconds=2)
    if due.date() != (due + timedelta(seconds=3)).date():
        pytest.skip("too close to midnight UTC for a same-day schedule")
    raw = tomllib.loads(example_config_text())
    smp = raw["call"][0]
    smp["opens"], smp["deadline"] = due - timedelta(days=3), due + timedelta(days=3)
    raw["call"] = [smp]
    raw["digest"] = {"time": time(due.hour, due.minute, due.second), "timezone": "UTC"}
    raw["storage"] = {"url": f"sqlite:///{tmp_path / 'mailbot.db'}", "data_dir": str(tmp_path)}
    raw["mailbox"] = []
    settings = parse_settings(raw)
    store = make_store(settings)
    queued = threading.Event()
    scheduler = DigestScheduler(settings, store, TemplateSet(), queued.set)
    stop = threading.Event()
    digests = DigestRunner(scheduler, stop)
    runner = threading.Thread(target=supervise, args=(digests,))
    runner.start()
    try:
        job = scheduler._scheduler.get_job(f"digest:{CALL}")
        assert job.misfire_grace_time == MISFIRE_GRACE.total_seconds() and job.coalesce is True
        assert queued.wait(timeout=15), "the digest job did not run"
    finally:
        stop.set()
        digests.wake.set()
        runner.join(timeout=15)
    assert not runner.is_alive()
    with store.sessions() as session:
        [run] = session.scalars(select(DigestRun)).all()
    assert (run.day, run.late) == (due.date(), False)
    store.engine.dispose()


def test_missed_and_failed_jobs_are_logged(
    populated: Storage, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, _ = scheduler_for(settings, populated)
    with caplog.at_level(logging.ERROR, logger="mailbot.scheduling"):
        scheduler._on_event(JobExecutionEvent(EVENT_JOB_MISSED, f"digest:{CALL}", "default", bj(9, 2, 8)))
    assert f"digest:{CALL} was missed" in caplog.text


# ---------------------------------------------------------------------------------------------- the command


def parse_digest_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_digest_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["digest", *argv])


def test_cli_preview_renders_without_queueing(
    populated: Storage, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "preview.html"
    assert (
        cmd_digest(parse_digest_args(["--call", CALL, "--date", "2024-09-02", "--preview", str(target)]), settings) == 0
    )
    html = target.read_text(encoding="utf-8")
    assert "<!DOCTYPE html>" in html and "王芳" in html
    assert capsys.readouterr().out.startswith("Subject: 【每日摘要】")
    assert digest_rows(populated) == (0, 0)


def test_cli_send_queues_and_delivers(populated: Storage, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    settings = make_settings(tmp_path / "data", smtp={"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"})
    args = parse_digest_args(["--call", CALL, "--date", "2024-09-02", "--send"])
    assert cmd_digest(args, settings) == 0
    assert cmd_digest(args, settings) == 0  # the second time it is already done: nothing more is sent
    [received] = smtp_sink.received
    assert received.recipients == ["min.gao@aminer.cn"]
    mail = read_mail(received.raw)
    assert mail["Auto-Submitted"] == "auto-generated"
    name, _book = workbook_of(mail)
    assert name == "smp-zhipu-2024-2024-09-02.xlsx"
    with populated.sessions() as session:
        run = session.get_one(DigestRun, (CALL, DAY))
        assert session.get_one(OutboxMail, run.outbox_id).state == OutboxState.SENT


@pytest.mark.postgres
def test_the_loser_of_a_race_leaves_nothing_behind(tmp_path: Path, postgres_url: str) -> None:
    """Another worker's uncommitted row for the same day: this one waits, then gives way, whole."""
    settings = make_settings(tmp_path / "data", postgres_url)
    winner, loser = make_store(settings), make_store(settings)
    populate(winner)
    call = settings.call_by_id(CALL)
    results: list[int | None] = []
    with winner.sessions() as session, session.begin():
        session.add(DigestRun(call_id=CALL, day=DAY, created_at=NOW, late=False))
        session.flush()
        racer = threading.Thread(
            target=lambda: results.append(queue_digest(loser, settings, call, DAY, NOW, late=False))
        )
        racer.start()
        racer.join(timeout=2)
        assert racer.is_alive(), "the second insert should wait for the first transaction"
    racer.join(timeout=30)
    assert results == [None]
    assert digest_rows(winner) == (1, 0)
    winner.engine.dispose()
    loser.engine.dispose()


def test_long_lists_are_cut_and_point_to_the_workbook(
    populated: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailbot.digest.render.LIST_LIMIT", 3)
    _subject, text, html = render_digest(digest_of(populated, settings), TemplateSet())
    for body in (text, html):
        assert "另有 1 条，见附件 smp-zhipu-2024-2024-09-02.xlsx" in body
        assert "1 more in the attached smp-zhipu-2024-2024-09-02.xlsx" in body
        assert "SMP24-0007" in body and "SMP24-0008" not in body.split("New submissions")[1].split("Messages by")[0]
