"""``digest --date D --send`` attaches the workbook of the call as it stood at the end of D, not today's."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from mailbot.clock import utcnow
from mailbot.digest.command import cmd_digest
from mailbot.embedded import SmtpSink
from storage import Storage
from storage.db import transaction
from storage.models import Application, DigestRun, Event, Message, OutboxMail, OutboxState
from tests.test_digest import (  # noqa: F401 - fixtures
    CALL,
    World,
    bj,
    form,
    make_settings,
    parse_digest_args,
    populate,
    read_mail,
    settings,
    store,
    workbook_of,
)
from tests.test_exports import sheet_rows
from tests.test_faults import ScriptedHandler, ScriptedSink


def add_later_history(target: Storage) -> None:
    """Two changes after 31 August on top of :func:`populate`: a form completed later, an item resolved later."""
    with transaction(target.sessions) as session:
        world = World(session)
        world.count = 100  # after populate's messages: keys stay unique
        zhou_v1 = form("周敏", "南京大学", "多模态教材生成", None)
        first = world.message("incomplete", "SMP24-0013", bj(8, 31, 11), zhou_v1)
        first.decision = {"outcome": "incomplete", "missing": ["topic"]}
        zhou_v2 = {**zhou_v1, "project_title": "多模态教材生成（补全）", "topic": "3.2"}
        revised = world.message("revision", "SMP24-0014", bj(9, 2, 7), zhou_v2)
        application = world.application(first, "incomplete", zhou_v1)
        # as the pipeline leaves it after the revision: complete now, its current form the revision
        application.current_message_pk, application.status = revised.id, "accepted"
        application.fields, application.project_title, application.missing = zhou_v2, zhou_v2["project_title"], []
        revised.application_id = application.id
        # decided unreadable on 30 August, resolved by an admin on 3 September
        queued = session.scalars(select(Message).where(Message.reference == "SMP24-0004")).one()
        session.add(
            Event(
                at=bj(8, 30, 10),
                kind="decided",
                actor="pipeline",
                message_pk=queued.id,
                detail={"outcome": "unreadable"},
            )
        )
        queued.outcome, queued.state, queued.decided_at = "accepted", "done", bj(9, 3, 10)
        # as the pipeline leaves the row after the admin's resolution: the later decision on it
        queued.reason = None
        queued.decision = {
            "outcome": "accepted",
            "rule": "first-form",
            "explanation": "收到申报表。",
            "flags": ["eligibility:no-phd"],
        }


def naive_beijing(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def test_a_past_days_digest_attaches_that_days_workbook(store: Storage, tmp_path: Path, smtp_sink: SmtpSink) -> None:  # noqa: F811
    populate(store)
    add_later_history(store)
    with store.sessions() as session:
        # the database today: every application, the revised ones at their latest form
        assert session.query(Application).filter(Application.call_id == CALL).count() == 6
    sending = make_settings(tmp_path / "data", smtp={"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"})
    assert cmd_digest(parse_digest_args(["--call", CALL, "--date", "2024-08-31", "--send"]), sending) == 0

    [received] = smtp_sink.received
    name, book = workbook_of(read_mail(received.raw))
    assert name == "smp-zhipu-2024-2024-08-31.xlsx"

    _labels, _keys, applications = sheet_rows(book["Applications"])
    by_reference: dict[Any, dict[str, Any]] = {row["reference"]: row for row in applications}
    # 王芳, 李娜's second project and 赵强 came on 1 September: not yet there
    assert sorted(by_reference) == ["SMP24-0001", "SMP24-0002", "SMP24-0013"]
    zhang = by_reference["SMP24-0001"]
    # the revision of 1 September is absent: the first version's form, title and arrival
    assert zhang["current_reference"] == "SMP24-0001"
    assert zhang["project_title"] == "大模型作文评测"
    assert zhang["status"] == "accepted"
    assert zhang["arrival"] == naive_beijing(bj(8, 20, 9, 55))
    assert zhang["supersedes"] is None
    li = by_reference["SMP24-0002"]
    assert (li["current_reference"], li["status"], li["project_title"]) == (
        "SMP24-0002",
        "accepted",
        "临床问答的可信评估",
    )
    assert li["flags"] == "eligibility:no-phd"
    zhou = by_reference["SMP24-0013"]
    # incomplete at the end of 31 August: completed only by the revision of 2 September
    assert zhou["current_reference"] == "SMP24-0013"
    assert zhou["status"] == "incomplete"
    assert zhou["missing"] == "topic"
    assert zhou["project_title"] == "多模态教材生成"
    assert zhou["topic"] is None
    assert zhou["arrival"] == naive_beijing(bj(8, 31, 10, 55))

    _labels, _keys, messages = sheet_rows(book["Messages"])
    assert [(row["reference"], row["outcome"]) for row in messages] == [
        ("SMP24-0001", "accepted"),
        ("SMP24-0002", "accepted"),
        ("SMP24-0003", "correspondence"),
        (None, "ignored"),
        ("SMP24-0004", "unreadable"),  # resolved only on 3 September
        ("SMP24-0013", "incomplete"),
    ]
    assert [row["arrival"] for row in messages][-1] == naive_beijing(bj(8, 31, 10, 55))
    assert messages[0]["project_title"] == "大模型作文评测"


@pytest.mark.parametrize("day", ["2024-09-03"])
def test_todays_workbook_is_still_the_call_as_it_is(
    store: Storage,  # noqa: F811
    tmp_path: Path,
    smtp_sink: SmtpSink,
    day: str,
) -> None:
    """The same history sent for a later day has every message and the latest form of each application."""
    populate(store)
    add_later_history(store)
    sending = make_settings(tmp_path / "data", smtp={"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"})
    assert cmd_digest(parse_digest_args(["--call", CALL, "--date", day, "--send"]), sending) == 0
    [received] = smtp_sink.received
    _name, book = workbook_of(read_mail(received.raw))
    _labels, _keys, applications = sheet_rows(book["Applications"])
    by_reference = {row["reference"]: row for row in applications}
    assert sorted(by_reference) == ["SMP24-0001", "SMP24-0002", "SMP24-0005", "SMP24-0007", "SMP24-0008", "SMP24-0013"]
    assert (by_reference["SMP24-0013"]["status"], by_reference["SMP24-0013"]["current_reference"]) == (
        "accepted",
        "SMP24-0014",
    )
    assert by_reference["SMP24-0001"]["project_title"] == "大模型作文自动评测（修订）"
    _labels, _keys, messages = sheet_rows(book["Messages"])
    outcomes = {row["reference"]: row["outcome"] for row in messages}
    assert outcomes["SMP24-0004"] == "accepted" and outcomes["SMP24-0014"] == "revision"
    assert "SMP24-0012" in outcomes


def test_a_past_days_digest_refused_for_now_is_tried_again(store: Storage, tmp_path: Path) -> None:  # noqa: F811
    """Its retry window starts when it is queued: dated at the end of D, it would be given up at once."""
    populate(store)
    handler = ScriptedHandler(data_replies=["451 4.3.0 Local error, try again"])
    with ScriptedSink(handler) as sink:
        sending = make_settings(tmp_path / "data", smtp={"host": sink.host, "port": sink.port, "tls": "none"})
        args = parse_digest_args(["--call", CALL, "--date", "2024-08-31", "--send"])
        before = utcnow()
        assert cmd_digest(args, sending) == 1  # not delivered yet
        with store.sessions() as session:
            run = session.get_one(DigestRun, (CALL, date(2024, 8, 31)))
            mail = session.get_one(OutboxMail, run.outbox_id)
            assert mail.state == OutboxState.PENDING, mail.last_reply
            assert "451" in (mail.last_reply or "")
            assert mail.created_at >= before
            # the run stands for the moment its digest showed: the next digest counts as new what came after
            assert run.created_at == bj(8, 31, 23, 59) + timedelta(seconds=59, microseconds=999999)
        with store.sessions() as session, session.begin():
            session.execute(update(OutboxMail).values(next_attempt_at=utcnow()))  # skip the retry delay
        assert cmd_digest(args, sending) == 0
    [delivered] = handler.accepted
    assert b"smp-zhipu-2024-2024-08-31.xlsx" in delivered
    assert handler.attempts == 2


EARLIER_DECISION: dict[str, Any] = {
    "outcome": "unreadable",
    "rule": "unreadable",
    "explanation": "附件已加密，无法读取。",
    "reason": "encrypted",
    "state": "review",
    "flags": [],
    "missing": [],
    "supersedes": None,
    "duplicate_of": None,
}


@pytest.mark.parametrize("recorded", ["the whole decision", "the outcome only (an event of an earlier version)"])
def test_a_past_days_workbook_shows_that_days_decision_of_a_message_decided_again_later(
    store: Storage,  # noqa: F811
    tmp_path: Path,
    smtp_sink: SmtpSink,
    recorded: str,
) -> None:
    """SMP24-0004 could not be read on 30 August and was resolved on 3 September: the workbook of
    31 August shows the decision of 30 August, not the rule, reason and flags of the later one."""
    populate(store)
    add_later_history(store)
    whole = recorded == "the whole decision"
    with transaction(store.sessions) as session:
        queued = session.scalars(select(Message).where(Message.reference == "SMP24-0004")).one()
        event = session.scalars(select(Event).where(Event.message_pk == queued.id, Event.kind == "decided")).one()
        event.detail = {**EARLIER_DECISION, "reference": "SMP24-0004"} if whole else {"outcome": "unreadable"}
    sending = make_settings(tmp_path / "data", smtp={"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"})
    assert cmd_digest(parse_digest_args(["--call", CALL, "--date", "2024-08-31", "--send"]), sending) == 0
    [received] = smtp_sink.received
    _name, book = workbook_of(read_mail(received.raw))
    _labels, _keys, messages = sheet_rows(book["Messages"])
    [row] = [row for row in messages if row["reference"] == "SMP24-0004"]
    assert (row["outcome"], row["state"]) == ("unreadable", "review")
    assert not row["flags"], "the later decision's flags"
    if whole:
        assert (row["rule"], row["reason"], row["explanation"]) == ("unreadable", "encrypted", "附件已加密，无法读取。")
    else:  # not recorded then: left empty rather than filled from the later decision
        assert (row["rule"], row["reason"], row["explanation"]) == (None, None, None)


def test_an_earlier_form_decided_again_later_shows_its_decision_of_that_day(
    store: Storage,  # noqa: F811
    tmp_path: Path,
    smtp_sink: SmtpSink,
) -> None:
    """周敏's first form was incomplete (no topic) on 31 August; on 1 September an admin decided it
    again as complete. The application in the workbook of 31 August still lacks the topic."""
    populate(store)
    add_later_history(store)
    with transaction(store.sessions) as session:
        first = session.scalars(select(Message).where(Message.reference == "SMP24-0013")).one()
        session.add(
            Event(
                at=first.decided_at,
                kind="decided",
                actor="pipeline",
                message_pk=first.id,
                detail={"outcome": "incomplete", "missing": ["topic"], "flags": [], "state": "done"},
            )
        )
        first.decision, first.decided_at = {"outcome": "incomplete", "missing": []}, bj(9, 1, 8)
    sending = make_settings(tmp_path / "data", smtp={"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"})
    assert cmd_digest(parse_digest_args(["--call", CALL, "--date", "2024-08-31", "--send"]), sending) == 0
    [received] = smtp_sink.received
    _name, book = workbook_of(read_mail(received.raw))
    _labels, _keys, applications = sheet_rows(book["Applications"])
    zhou = {row["reference"]: row for row in applications}["SMP24-0013"]
    assert (zhou["status"], zhou["missing"]) == ("incomplete", "topic")
