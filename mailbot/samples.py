"""Sample submissions for the demo, generated from a call's own form definition.

Nothing here reads files outside the package: the forms are built with python-docx from the
call's field labels, so the demo works on a machine that has only the installed package.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import docx

from mailbot.config import CallSettings


@dataclass(frozen=True)
class Sample:
    call_id: str
    arrival: datetime
    raw: bytes
    story: str  # what the demo expects to happen, for the printed table


def form_document(call: CallSettings, values: Mapping[str, object]) -> bytes:
    """A filled-in form: a two-column table of the first label of each field and its value."""
    document = docx.Document()
    document.add_heading(call.name_zh, level=1)
    table = document.add_table(rows=0, cols=2)
    table.style = "Table Grid"
    for field in call.field:
        value = values.get(field.name)
        row = table.add_row().cells
        row[0].text = field.labels[0]
        if isinstance(value, bool):
            row[1].text = "是" if value else "否"
        else:
            row[1].text = "" if value is None else str(value)
    document.add_paragraph("研究内容：（略）")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _mail(
    sender: tuple[str, str],
    to: str,
    subject: str,
    arrival: datetime,
    body: str,
    attachments: Sequence[tuple[str, bytes, str]] = (),
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = f"{sender[0]} <{sender[1]}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(arrival - timedelta(seconds=20))
    message["Message-ID"] = make_msgid(domain=sender[1].split("@")[1])
    for name, value in (extra_headers or {}).items():
        message[name] = value
    message.set_content(body)
    for filename, data, mime in attachments:
        maintype, subtype = mime.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    stamp = format_datetime(arrival)
    received = f"Received: from mail.example.edu.cn by mx.example.org; {stamp}\r\n"
    return received.encode() + message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _person(
    call: CallSettings,
    name: str,
    institution: str,
    address: str,
    title: str,
    topic_index: int,
    **overrides: object,
) -> dict[str, object]:
    topic = call.topic[topic_index % len(call.topic)] if call.topic else None
    values: dict[str, object] = {
        "project_title": f"{topic.name if topic else '大模型'}关键技术研究",
        "applicant_name": name,
        "gender": "男",
        "title": "副教授",
        "degree": "博士",
        "institution": institution,
        "department": "计算机学院",
        "email": address,
        "phone": "13800138000",
        "direction": topic.direction if topic else "",
        "topic": topic.code if topic else "",
        "budget": 15,
        "prior_grant": False,
        "birth": "1985-06",
    }
    values["title"] = title
    values.update(overrides)
    return {k: v for k, v in values.items() if k in {f.name for f in call.field}}


@dataclass(frozen=True)
class _Story:
    """One sample message: what should happen to it, when it arrives and what it carries."""

    story: str
    arrival: datetime
    sender: tuple[str, str]
    subject: str
    body: str
    attachments: Sequence[tuple[str, bytes, str]] = ()
    extra_headers: Mapping[str, str] | None = None


def samples_for(call: CallSettings) -> list[Sample]:
    """About ten messages that exercise every outcome of one call, in order of arrival."""
    stories = sorted([*_form_stories(call), *_formless_stories(call)], key=lambda story: story.arrival)
    to = call.addresses[0]
    return [
        Sample(
            call.id,
            story.arrival,
            _mail(story.sender, to, story.subject, story.arrival, story.body, story.attachments, story.extra_headers),
            story.story,
        )
        for story in stories
    ]


def _form_stories(call: CallSettings) -> list[_Story]:
    """The messages carrying a filled-in form: on time, incomplete, revised, a second project, late."""
    deadline, day, short = call.deadline, timedelta(days=1), call.reference_prefix
    wang = _person(call, "王静", "清华大学", "wangjing@tsinghua.edu.cn", "教授", 0)
    li = _person(call, "李强", "浙江大学", "liqiang@zju.edu.cn", "研究员", 4, phone=None, email=None)
    li_fixed = dict(li, email="liqiang@zju.edu.cn", phone="13900139000")
    wang2 = dict(wang, project_title="面向科学文献的多智能体协作系统", topic=call.topic[-1].code if call.topic else "")
    zhou = _person(call, "周杰", "武汉大学", "zhoujie@whu.edu.cn", "讲师", 7)
    hu = _person(call, "胡兵", "南京大学", "hubing@nju.edu.cn", "教授", 9)
    wang_address, li_address = ("王静", "wangjing@tsinghua.edu.cn"), ("李强", "liqiang@zju.edu.cn")

    def form(name: str, values: Mapping[str, object]) -> list[tuple[str, bytes, str]]:
        return [(name, form_document(call, values), DOCX)]

    return [
        _Story("accepted", deadline - 20 * day, wang_address, f"{short} 申报-王静-清华大学",
               "您好，附件是申报表，请查收。", form("申报表-王静.docx", wang)),
        _Story("incomplete (no contact)", deadline - 15 * day, li_address, "申报材料",
               "老师好，申报表见附件。", form("申报表.docx", li)),
        _Story("revision (complete re-send)", deadline - 14 * day, li_address, "申报材料（更新版）",
               "补充了联系方式，以此版为准。", form("申报表-更新.docx", li_fixed)),
        _Story("duplicate (second project)", deadline - 10 * day, wang_address, "再次申报",
               "我还有一个项目想申报。", form("申报表-项目二.docx", wang2)),
        _Story("accepted (minutes before the deadline)", deadline - timedelta(minutes=3),
               ("周杰", "zhoujie@whu.edu.cn"), f"{short} 申报-周杰", "申报表见附件。", form("申报表-周杰.docx", zhou)),
        _Story("late (after the deadline)", deadline + timedelta(minutes=5), ("胡兵", "hubing@nju.edu.cn"),
               "申报-胡兵-南京大学", "抱歉晚了几分钟。", form("申报表-胡兵.docx", hu)),
    ]  # fmt: skip


def _formless_stories(call: CallSettings) -> list[_Story]:
    """The messages without a readable form: forgotten, broken, an automatic reply, a question."""
    deadline, day = call.deadline, timedelta(days=1)
    broken = [("申报表.docx", b"PK\x03\x04 this file was cut off in transit", DOCX)]
    return [
        _Story("no_attachment (forgot the form)", deadline - 5 * day, ("赵敏", "zhaomin@fudan.edu.cn"),
               "申报-赵敏-复旦大学", "老师您好，申报表见附件，请查收。"),
        _Story("unreadable (broken file)", deadline - 4 * day, ("陈晨", "chenchen@nju.edu.cn"), "申报-陈晨",
               "申报表见附件。", broken),
        _Story("ignored (out-of-office reply)", deadline - 3 * day, ("刘洋", "liuyang@pku.edu.cn"),
               "自动回复: 申报通知", "我正在休假，回来后回复您。", extra_headers={"Auto-Submitted": "auto-replied"}),
        _Story("correspondence (a question)", deadline - 2 * day, ("孙丽", "sunli@whu.edu.cn"),
               "咨询：博士后可以申请吗？", "请问在站博士后是否可以作为申请人？谢谢！"),
    ]  # fmt: skip


def demo_samples(calls: list[CallSettings]) -> list[Sample]:
    samples = [s for call in calls for s in samples_for(call)]
    return sorted(samples, key=lambda s: s.arrival)
