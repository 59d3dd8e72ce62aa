"""Every shape of issue 19 through the whole path: real Dovecot (pymap where absent), aiosmtpd, SQLite.

One applicant per shape, each form made at test time and wrapped by benchmarks.shapes: each message
must be accepted with exactly its form's fields, answered once, and a forwarded one must record who
forwarded it; the scanned signed copy stays an attachment of the application.
"""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.shapes import SECRETARY, SHAPES, Sent
from mailbot.embedded import SmtpSink
from mailbot.export import export_records
from mailbot.worker import Worker
from storage.models import Message
from tests.conftest import ImapServer, make_settings
from tests.parsers.builders import EXPECTED, SMP_ROWS, table_form

BEIJING = timezone(timedelta(hours=8))
NAMES = [
    "李明",
    "王芳",
    "刘洋",
    "陈静",
    "杨帆",
    "赵磊",
    "黄丽",
    "周杰",
    "吴敏",
    "徐涛",
    "孙悦",
    "马超",
    "朱琳",
    "胡斌",
    "郭蕾",
    "何伟",
    "高翔",
    "林峰",
    "罗娟",
    "梁宇",
]


def applicant(number: int) -> tuple[bytes, dict[str, object], str]:
    """A filled-in form of a person of their own, its expected fields, and their address."""
    name, address, phone = NAMES[number], f"applicant{number:02d}@tsinghua.edu.cn", f"139-0000-{number:04d}"
    title = f"大模型驱动的教育评测方法研究之{name}"
    rows = [list(row) for row in SMP_ROWS]
    rows[0][1] = title
    rows[1][1] = name
    rows[5][1], rows[5][3] = phone, address
    expected = EXPECTED | {
        "project_title": title,
        "applicant_name": name,
        "phone": phone.replace("-", ""),
        "email": address,
    }
    return table_form(rows), expected, address


@pytest.mark.timeout(600)
def test_every_shape_is_accepted_with_its_fields_end_to_end(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    assert len(SHAPES) <= len(NAMES)
    expected_by_id: dict[str, tuple[str, dict[str, object]]] = {}
    arrival = datetime(2024, 9, 7, 9, 0, tzinfo=BEIJING)
    for number, shape in enumerate(SHAPES):
        form, expected, address = applicant(number)
        message_id = f"<shape-{number}@tsinghua.edu.cn>"
        sent = Sent(
            form, f"申报表-{NAMES[number]}.docx", NAMES[number], address, "min.gao@aminer.cn", message_id=message_id
        )
        raw = shape.build(sent)
        imap_server.append("min.gao@aminer.cn", raw, arrival + timedelta(minutes=number))
        expected_by_id[message_id] = (shape.name, expected)

    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        with bot.store.sessions() as session:
            records = {record["message_id"]: record for record in export_records(session)}
            stored = {message.message_id: message for message in session.scalars(select(Message))}
            decisions = {key: message.decision or {} for key, message in stored.items()}
            readings = {key: message.reading or {} for key, message in stored.items()}

    for message_id, (shape_name, expected) in expected_by_id.items():
        record = records[message_id]
        assert record["outcome"] == "accepted", (shape_name, record["outcome"], record["explanation"])
        assert {name: record["fields"][name] for name in expected} == expected, shape_name

    answers = [email.message_from_bytes(mail.raw) for mail in smtp_sink.received]
    answered = sorted(str(answer["In-Reply-To"]) for answer in answers)
    assert answered == sorted(expected_by_id), "each message answered exactly once"

    for shape_name in ("forwarded-rfc822", "forwarded-inline", "forwarded-outlook-item"):
        message_id = next(key for key, (name, _) in expected_by_id.items() if name == shape_name)
        matched = decisions[message_id].get("matched") or {}
        assert matched.get("forwarded_by") == SECRETARY[1], shape_name
        assert matched.get("forwarded_from") == records[message_id]["fields"]["email"], shape_name
        assert readings[message_id]["forwarded_by"] == SECRETARY[1]
        # the answer goes to whoever sent the mail: the secretary
        answer = next(a for a in answers if a["In-Reply-To"] == message_id)
        assert SECRETARY[1] in str(answer["To"])

    scanned = next(key for key, (name, _) in expected_by_id.items() if name == "with-signed-scan")
    attachments = readings[scanned]["attachments"]
    assert [(a["kind"], a["role"]) for a in attachments] == [("docx", "form"), ("pdf", "document")]
    assert attachments[1]["note"].startswith("scanned")
