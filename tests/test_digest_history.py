"""``digest --date D`` shows the call as it stood at the end of D; a person's second project is not a second person."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.config import Settings
from mailbot.digest.command import cmd_digest
from storage import Storage
from storage.db import transaction
from storage.models import Application, Event, Message
from tests.test_digest import CALL, bj, digest_of, parse_digest_args, populate, settings, store  # noqa: F401 - fixtures


@pytest.fixture
def populated(store: Storage) -> Storage:  # noqa: F811
    populate(store)
    return store


def preview(settings: Settings, day: str, target: Path, capsys: pytest.CaptureFixture[str]) -> str:  # noqa: F811
    capsys.readouterr()
    assert cmd_digest(parse_digest_args(["--call", CALL, "--date", day, "--preview", str(target)]), settings) == 0
    return capsys.readouterr().out


def test_a_digest_of_an_earlier_day_shows_the_call_as_it_stood_then(
    populated: Storage,
    settings: Settings,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # at the end of 31 August: two applications (張伟's first version), one item in the queue
    text = preview(settings, "2024-08-31", tmp_path / "d.html", capsys)
    assert "当前申请 Applications: 2" in text
    assert "大模型作文评测" in text or "SMP24-0001" in text
    assert "SMP24-0004" in text  # waiting in the queue then
    assert "SMP24-0010" not in text  # arrived on 1 September
    assert "王芳" not in text and "赵强" not in text
    assert "合计 All messages: 5 / 5" in text
    assert "已截止" not in text

    # at the end of 1 September: the revision, the duplicate and the incomplete one are in
    text = preview(settings, "2024-09-01", tmp_path / "d.html", capsys)
    assert "当前申请 Applications: 5" in text
    assert "SMP24-0010" in text and "SMP24-0012" not in text

    # after the deadline the same call says it is closed
    text = preview(settings, "2024-09-10", tmp_path / "d.html", capsys)
    assert "已截止" in text


def test_an_item_resolved_later_was_still_waiting_on_that_day(
    populated: Storage,
    settings: Settings,  # noqa: F811
) -> None:
    with transaction(populated.sessions) as session:
        queued = session.scalars(select(Message).where(Message.reference == "SMP24-0004")).one()
        # decided unreadable on 30 August, resolved by an admin on 3 September
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
    then = digest_of(populated, settings, now=bj(8, 31, 23, 59))
    assert [item.reference for item in then.review] == ["SMP24-0004"]
    assert then.totals["unreadable"] == 1 and then.totals["accepted"] == 2


def test_a_duplicate_is_a_second_project_of_the_same_person(
    populated: Storage,
    settings: Settings,  # noqa: F811
) -> None:
    with transaction(populated.sessions) as session:
        li_first, li_second = session.scalars(
            select(Application)
            .join(Message, Message.id == Application.current_message_pk)
            .where(Message.reference.in_(["SMP24-0002", "SMP24-0007"]))
            .order_by(Message.reference)
        )
        li_second.applicant_id = li_first.applicant_id  # as the pipeline stores it: the same person
    data = digest_of(populated, settings)
    assert (data.applications, data.applicants) == (5, 4)
    # 李娜 counts once for 北京大学, however many projects she sent
    assert [(bar.label, bar.count) for bar in data.institutions] == [("清华大学", 2), ("北京大学", 1), ("复旦大学", 1)]
