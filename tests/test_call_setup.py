"""Opening calls from blank forms made here, unlike the seed forms, and reading filled copies through real servers.

Five forms: team members in a repeated table (tick boxes, a content control), labels above their
values (bilingual, on two lines), an English-only form of "label: ____" lines, a form published
only as PDF, and one only as .doc. ``mailbot call new`` writes each call's block without hand
edits; filled copies go through Dovecot and aiosmtpd and every field and outcome must come out
right, with acknowledgements naming the call. Then several calls share one address.
"""

from __future__ import annotations

import copy
import csv
import email
import email.policy
import io
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import docx
import pytest
import tomli_w
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls
from openpyxl import Workbook

from mailbot.admin.call_setup import CallSetupError, NewCall, new_call
from mailbot.admin.call_topics import read_topics
from mailbot.config import CallSettings, parse_settings
from mailbot.embedded import SmtpSink
from mailbot.export import export_records
from mailbot.routing import choose
from mailbot.worker import Worker
from parsers import read_message
from parsers.convert import convert, office_binary
from parsers.documents import read_document
from parsers.form_labels import read_blank_form
from parsers.headers import EMPTY_ENVELOPE
from parsers.label_matching import match_labels
from parsers.model import FormReading, Submission
from tests.conftest import ImapServer, make_config

REPO = Path(__file__).resolve().parent.parent
MAILBOX_USER = "myjj@caai.cn"  # a Dovecot account of the test servers; the calls' addresses differ
BLANK_CHECK = "☐"
TICKED = "☑"


# --- forms made here -----------------------------------------------------------------------------


@dataclass
class Pairs:
    """A table of label | value cells, two pairs a row at most (a one-pair row's value spans the row)."""

    rows: list[list[str]]
    options: dict[str, list[str]] = field(default_factory=dict)  # a label whose value is tick boxes
    content_controls: tuple[str, ...] = ()  # a label whose value cell is a content control


@dataclass
class Above:
    """A table whose label rows each sit over a row of value cells; a label may be on two lines."""

    rows: list[list[str]]


@dataclass
class Lines:
    """Paragraphs of "label: ____" slots."""

    rows: list[list[str]]


@dataclass
class Team:
    caption: str
    columns: list[str]
    rows: int


Part = str | Pairs | Above | Lines | Team  # a str is a heading line


def _cell_text(cell: Any, text: str) -> None:
    cell.text = ""
    lines = text.split("\n")
    paragraph = cell.paragraphs[0]
    for number, line in enumerate(lines):
        run = paragraph.add_run(line)
        if number < len(lines) - 1:
            run.add_break()


def _content_control(cell: Any, text: str) -> None:
    """The value cell as Word's plain-text content control, showing its placeholder when empty."""
    shown = text or "单击或点击此处输入文字。"
    placeholder = "" if text else "<w:showingPlcHdr/>"  # Word drops the mark once something is typed
    cell._tc.remove(cell.paragraphs[0]._p)
    sdt = parse_xml(
        f"<w:sdt {nsdecls('w')}><w:sdtPr>{placeholder}</w:sdtPr><w:sdtContent>"
        f"<w:p><w:r><w:t>{shown}</w:t></w:r></w:p></w:sdtContent></w:sdt>"
    )
    cell._tc.append(sdt)


def _value(label: str, values: Mapping[str, str] | None, options: Mapping[str, list[str]]) -> str:
    chosen = (values or {}).get(label, "")
    if label in options:
        return "  ".join(f"{TICKED if option == chosen else BLANK_CHECK}{option}" for option in options[label])
    return chosen


def make_docx(
    parts: Sequence[Part], values: Mapping[str, str] | None = None, team: Sequence[Sequence[str]] = ()
) -> bytes:
    """The form, blank (no ``values``) or filled; labels are the keys of ``values``."""
    document = docx.Document()
    for part in parts:
        if isinstance(part, str):
            document.add_paragraph(part)
        elif isinstance(part, Pairs):
            table = document.add_table(rows=len(part.rows), cols=4)
            table.style = "Table Grid"
            for row, labels in zip(table.rows, part.rows, strict=True):
                cells = row.cells
                if len(labels) == 1:
                    value_cell = cells[1].merge(cells[3])
                    pairs = [(cells[0], value_cell, labels[0])]
                else:
                    pairs = [(cells[0], cells[1], labels[0]), (cells[2], cells[3], labels[1])]
                for label_cell, value_cell, label in pairs:
                    _cell_text(label_cell, label)
                    text = _value(label, values, part.options)
                    if label in part.content_controls:
                        _content_control(value_cell, text)
                    else:
                        _cell_text(value_cell, text)
        elif isinstance(part, Above):
            width = max(len(labels) for labels in part.rows)
            table = document.add_table(rows=2 * len(part.rows), cols=width)
            table.style = "Table Grid"
            for number, labels in enumerate(part.rows):
                label_row, value_row = table.rows[2 * number].cells, table.rows[2 * number + 1].cells
                if len(labels) == 1 and width > 1:
                    label_cells, value_cells = [label_row[0].merge(label_row[-1])], [value_row[0].merge(value_row[-1])]
                else:
                    label_cells, value_cells = list(label_row), list(value_row)
                for label, label_cell, value_cell in zip(labels, label_cells, value_cells, strict=False):
                    _cell_text(label_cell, label)
                    _cell_text(value_cell, _value(label, values, {}))
        elif isinstance(part, Lines):
            for labels in part.rows:
                slots = [f"{label}: {(values or {}).get(label) or '_' * 16}" for label in labels]
                document.add_paragraph("    ".join(slots))
        else:
            table = document.add_table(rows=part.rows + 2, cols=len(part.columns))
            table.style = "Table Grid"
            caption = table.rows[0].cells[0].merge(table.rows[0].cells[-1])
            _cell_text(caption, part.caption)
            for cell, column in zip(table.rows[1].cells, part.columns, strict=True):
                _cell_text(cell, column)
            for row, member in zip(table.rows[2:], team, strict=False):
                for cell, text in zip(row.cells, member, strict=True):
                    _cell_text(cell, text)
    document.add_paragraph("填表说明：请如实填写，课题编号见申报指南。")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def converted(data: bytes, target: str) -> bytes:
    return convert(data, "docx", target, f"form.{target}", 120)


# --- the five calls ------------------------------------------------------------------------------


@dataclass
class Applicant:
    values: dict[str, str]  # label → what the applicant writes
    expected: dict[str, Any]  # field name → value read
    outcome: str
    team: list[list[str]] = field(default_factory=list)
    subject: str = "申报材料"


@dataclass
class FormCase:
    call_id: str
    name_zh: str
    parts: list[Part]
    form_format: str  # docx | pdf | doc: how the blank form is published and the filled copies sent
    topics_file: str
    topics: bytes
    applicants: list[Applicant]
    expected_kinds: dict[str, str]

    def blank(self) -> bytes:
        return self.publish(make_docx(self.parts))

    def filled(self, applicant: Applicant) -> bytes:
        return self.publish(make_docx(self.parts, applicant.values, applicant.team))

    def publish(self, data: bytes) -> bytes:
        return data if self.form_format == "docx" else converted(data, self.form_format)


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _xlsx(rows: list[list[str]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _topic_table_docx(rows: list[list[str]]) -> bytes:
    document = docx.Document()
    document.add_paragraph("附件2：课题指南")
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for row, texts in zip(table.rows, rows, strict=True):
        for cell, text in zip(row.cells, texts, strict=True):
            cell.text = text
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


TEAM = Pairs(
    [
        ["课题名称"],
        ["负责人姓名", "性别"],
        ["出生日期", "职称"],
        ["工作单位"],
        ["电子邮箱", "手机号码"],
        ["选题", "申请经费（万元）"],
        ["是否有在研项目"],
        ["合作单位"],
    ],
    options={"性别": ["男", "女"], "是否有在研项目": ["是", "否"]},
    content_controls=("工作单位",),
)


def team_case() -> FormCase:
    def person(name: str, title: str, email_address: str, topic: str, outcome: str, **more: Any) -> Applicant:
        values = {
            "课题名称": title,
            "负责人姓名": name,
            "性别": "女",
            "出生日期": "1988年3月",
            "职称": "副研究员",
            "工作单位": "中国科学院自动化研究所",
            "电子邮箱": email_address,
            "手机号码": "139 1000 2000",
            "选题": topic,
            "申请经费（万元）": "40",
            "是否有在研项目": "否",
            "合作单位": "北京航空航天大学",
        }
        expected = {
            "project_title": title,
            "applicant_name": name.replace(" ", ""),
            "gender": "女",
            "birth": "1988年3月",
            "title": "副研究员",
            "institution": "中国科学院自动化研究所",
            "email": email_address,
            "phone": "13910002000",
            "topic": "2.1",
            "budget": 40.0,
            "shifou_you_zai_yan_xiangmu": False,
            "hezuo_danwei": "北京航空航天大学",
        }
        team = [["王强", "清华大学", "教授", "算法设计"], ["李娜", "北京大学", "讲师", "数据构建"]]
        return Applicant(values, expected, outcome, team, **more)

    topics = "一、智能制造\n1.1 工业大模型\n1.2 预测性维护\n二、智慧能源\n2.1 电网调度大模型\n2.2 新能源功率预测\n"
    return FormCase(
        "youth-2025",
        "青年创新基金（2025年度）",
        ["2025年度青年创新基金申请书", TEAM, Team("项目组主要成员", ["姓名", "单位", "职称", "分工"], 4)],
        "docx",
        "topics.txt",
        topics.encode("utf-8"),
        [
            person("赵 敏", "面向电网调度的大模型方法", "zhaomin@ia.ac.cn", "2.1 电网调度大模型", "accepted"),
            person(
                "赵敏",
                "面向电网调度的大模型方法研究",
                "zhaomin@ia.ac.cn",
                "2.1",
                "revision",
                subject="申报材料（修改稿）",
            ),
        ],
        {"shifou_you_zai_yan_xiangmu": "yesno", "hezuo_danwei": "text", "gender": "gender"},
    )


def above_case() -> FormCase:
    parts: list[Part] = [
        "交叉学科研究专项 申报表",
        Above(
            [
                ["项目名称\nProject Title"],
                ["申请人\nApplicant", "所在单位\nInstitution", "院系\nDepartment"],
                ["电子邮箱\nEmail", "联系电话\nPhone", "课题编号\nTopic No."],
                ["预算（万元）\nBudget", "预期成果形式\nExpected Outputs", "是否需要伦理审查\nEthics Review"],
            ]
        ),
    ]
    values = {
        "项目名称\nProject Title": "Language models for archaeology",
        "申请人\nApplicant": "钱 宇",
        "所在单位\nInstitution": "浙江大学",
        "院系\nDepartment": "计算机科学与技术学院",
        "电子邮箱\nEmail": "qianyu@zju.edu.cn",
        "联系电话\nPhone": "0571-8795 1234",
        "课题编号\nTopic No.": "B03",
        "预算（万元）\nBudget": "25.5",
        "预期成果形式\nExpected Outputs": "论文2篇，数据集1个",
        "是否需要伦理审查\nEthics Review": "是",
    }
    expected = {
        "project_title": "Language models for archaeology",
        "applicant_name": "钱宇",
        "institution": "浙江大学",
        "department": "计算机科学与技术学院",
        "email": "qianyu@zju.edu.cn",
        "phone": "057187951234",
        "topic": "B03",
        "budget": 25.5,
        "expected_outputs": "论文2篇，数据集1个",
        "ethics_review": True,
    }
    second = dict(values, **{"申请人\nApplicant": "孙丽", "电子邮箱\nEmail": "", "联系电话\nPhone": ""})
    second_expected = dict(expected, applicant_name="孙丽", email=None, phone=None)
    topics = [["编号", "名称", "方向"], ["B01", "文物数字化", "数字人文"], ["B02", "古文字识别", "数字人文"]]
    topics += [["B03", "考古大模型", "数字人文"], ["B04", "城市计算", "社会计算"]]
    return FormCase(
        "cross-2025",
        "交叉学科研究专项（2025）",
        parts,
        "docx",
        "topics.csv",
        _csv(topics),
        [Applicant(values, expected, "accepted"), Applicant(second, second_expected, "incomplete")],
        {"expected_outputs": "text", "ethics_review": "yesno"},
    )


def english_case() -> FormCase:
    parts: list[Part] = [
        "Research Fellowship Application Form",
        Lines(
            [
                ["Project title"],
                ["Full name", "Gender"],
                ["Date of birth", "Highest degree"],
                ["Affiliation"],
                ["Email", "Mobile"],
                ["Topic"],
                ["Requested amount (10k CNY)"],
                ["Career stage"],
                ["Previous grant (yes/no)"],
            ]
        ),
    ]
    values = {
        "Project title": "Faithful summarisation of clinical notes",
        "Full name": "Alice Chen",
        "Gender": "Female",
        "Date of birth": "1990-05",
        "Highest degree": "PhD",
        "Affiliation": "University of Edinburgh",
        "Email": "Alice.Chen@ed.ac.uk",
        "Mobile": "+44 7700 900123",
        "Topic": "T2",
        "Requested amount (10k CNY)": "30",
        "Career stage": "Early career researcher",
        "Previous grant (yes/no)": "no",
    }
    expected = {
        "project_title": "Faithful summarisation of clinical notes",
        "applicant_name": "Alice Chen",
        "gender": "女",
        "birth": "1990-05",
        "degree": "PhD",
        "institution": "University of Edinburgh",
        "email": "alice.chen@ed.ac.uk",
        "phone": "447700900123",
        "topic": "T2",
        "budget": 30.0,
        "career_stage": "Early career researcher",
        "previous_grant": False,
    }
    topics = [
        {"code": "T1", "name": "Clinical NLP", "direction": "Health"},
        {"code": "T2", "name": "Summarisation", "direction": "Health"},
    ]
    return FormCase(
        "fellowship-2025",
        "研究奖学金（2025）",
        parts,
        "docx",
        "topics.json",
        json.dumps(topics).encode(),
        [Applicant(values, expected, "accepted", subject="Fellowship application")],
        {"career_stage": "text", "previous_grant": "yesno"},
    )


def pdf_case() -> FormCase:
    parts: list[Part] = [
        "海洋科技专项 项目申请书",
        Pairs([["项目名称"], ["申请人", "单位名称"], ["邮箱", "电话"], ["研究方向", "课题"], ["经费预算"]]),
    ]
    values = {
        "项目名称": "海洋环境监测大模型",
        "申请人": "周杰",
        "单位名称": "中国海洋大学",
        "邮箱": "zhoujie@ouc.edu.cn",
        "电话": "13605320000",
        "研究方向": "海洋观测",
        "课题": "M2",
        "经费预算": "50万元",
    }
    expected = {
        "project_title": "海洋环境监测大模型",
        "applicant_name": "周杰",
        "institution": "中国海洋大学",
        "email": "zhoujie@ouc.edu.cn",
        "phone": "13605320000",
        "direction": "海洋观测",
        "topic": "M2",
        "budget": 50.0,
    }
    topics = [
        ["方向", "编号", "课题名称"],
        ["海洋观测", "M1", "海洋遥感"],
        ["", "M2", "环境监测"],
        ["海洋工程", "M3", "水下机器人"],
    ]
    return FormCase(
        "ocean-2025",
        "海洋科技专项（2025）",
        parts,
        "pdf",
        "topics.docx",
        _topic_table_docx(topics),
        [Applicant(values, expected, "accepted")],
        {},
    )


def doc_case() -> FormCase:
    parts: list[Part] = [
        "青年教师科研启动基金 申请表",
        Pairs(
            [
                ["项目名称"],
                ["主持人", "职称"],
                ["学位", "依托单位"],
                ["手机", "电子邮件"],
                ["申报课题"],
                ["项目起止时间"],
            ]
        ),
    ]
    values = {
        "项目名称": "低资源方言语音识别",
        "主持人": "吴 磊",
        "职称": "讲师",
        "学位": "博士",
        "依托单位": "四川大学",
        "手机": "18980001111",
        "电子邮件": "wulei@scu.edu.cn",
        "申报课题": "Q-02",
        "项目起止时间": "2025.01-2026.12",
    }
    expected = {
        "project_title": "低资源方言语音识别",
        "applicant_name": "吴磊",
        "title": "讲师",
        "degree": "博士",
        "institution": "四川大学",
        "phone": "18980001111",
        "email": "wulei@scu.edu.cn",
        "topic": "Q-02",
        "xiangmu_qizhi_shijian": "2025.01-2026.12",
    }
    topics = [["课题编号", "课题名称"], ["Q-01", "方言语料"], ["Q-02", "方言识别"]]
    return FormCase(
        "starter-2025",
        "青年教师科研启动基金（2025）",
        parts,
        "doc",
        "topics.xlsx",
        _xlsx(topics),
        [Applicant(values, expected, "accepted")],
        {"xiangmu_qizhi_shijian": "text"},
    )


# --- running mailbot ------------------------------------------------------------------------------


def _mailbot(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mailbot", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=os.environ)


def open_call(
    case: FormCase, folder: Path, name_zh: str | None = None, call_id: str | None = None, address: str | None = None
) -> dict[str, Any]:
    """``mailbot call new`` on the blank form (as the fund published it), the block read back."""
    folder.mkdir(parents=True, exist_ok=True)
    form = folder / f"blank.{case.form_format}"
    form.write_bytes(case.blank())
    topics = folder / case.topics_file
    topics.write_bytes(case.topics)
    block = folder / "call.toml"
    done = _mailbot(
        "call",
        "new",
        "--form",
        str(form),
        "--topics",
        str(topics),
        "--id",
        call_id or case.call_id,
        "--name-zh",
        name_zh or case.name_zh,
        "--deadline",
        "2030-12-31",
        "--opens",
        "2024-01-01",
        "--address",
        address or f"{case.call_id}@fund.example.org",
    )
    assert done.returncode == 0, done.stderr
    block.write_text(done.stdout, encoding="utf-8")
    return dict(tomllib.loads(done.stdout)["call"][0])


def _message(case_address: str, applicant: Applicant, attachment: bytes, extension: str, number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"applicant{number}@example.edu"
    message["To"] = case_address
    message["Subject"] = applicant.subject
    message["Message-ID"] = f"<call-setup-{number}-{case_address}>"
    message["Date"] = "Mon, 01 Sep 2025 10:00:00 +0800"
    message.set_content("您好，附件是申报材料，请查收。")
    subtype = {"docx": "vnd.openxmlformats-officedocument.wordprocessingml.document", "pdf": "pdf", "doc": "msword"}
    message.add_attachment(
        attachment, maintype="application", subtype=subtype[extension], filename=f"申请书.{extension}"
    )
    return message.as_bytes(policy=email.policy.SMTP)


def _config(tmp_path: Path, imap: ImapServer, smtp: SmtpSink, calls: list[dict[str, Any]]) -> Path:
    raw = make_config(tmp_path, imap, smtp)
    box = copy.deepcopy(next(b for b in raw["mailbox"] if b["user"] == MAILBOX_USER))
    box.update(name="fund", calls=[call["id"] for call in calls])
    raw["mailbox"] = [box]
    raw["call"] = calls
    parse_settings(raw, "test")  # the blocks are used as written: no hand edits
    path = tmp_path / "mailbot.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def _acknowledgements(sink: SmtpSink) -> dict[str, tuple[str, str]]:
    found = {}
    for mail in sink.received:
        parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(("plain",))
        assert body is not None
        found[str(parsed["In-Reply-To"])] = (str(parsed["Subject"]), body.get_content())
    return found


CASES = [team_case, above_case, english_case, pdf_case, doc_case]


def _needs_office() -> None:
    if office_binary() is None:
        pytest.skip("LibreOffice is needed for the PDF and .doc forms")


def test_blank_forms_give_the_fields_and_kinds(tmp_path: Path) -> None:
    """Label discovery alone, on the forms that need no conversion: every label, its kind, no team column."""
    for make in (team_case, above_case, english_case):
        case = make()
        form = read_blank_form(case.blank(), "blank.docx")
        matched = {item.name: item.kind for item in match_labels(form.labels, form.lists)}
        expected_names = set(case.applicants[0].expected)
        assert set(matched) == expected_names, case.call_id
        for name, kind in case.expected_kinds.items():
            assert matched[name] == kind, (case.call_id, name)
        assert all(name.isascii() and name.replace("_", "").isalnum() for name in matched)
    team = read_blank_form(team_case().blank(), "blank.docx")
    assert [table.columns for table in team.lists] == [("姓名", "单位", "职称", "分工")]
    assert team.title == "2025年度青年创新基金申请书"


def test_topic_lists_in_every_format(tmp_path: Path) -> None:
    for make in (team_case, above_case, english_case, doc_case):
        case = make()
        path = tmp_path / case.topics_file
        path.write_bytes(case.topics)
        topics = read_topics(path)
        assert topics, case.topics_file
        assert all(topic.code and topic.name for topic in topics)
    path = tmp_path / "t.txt"
    path.write_bytes(team_case().topics)
    assert [(t.code, t.name, t.direction) for t in read_topics(path)] == [
        ("1.1", "工业大模型", "智能制造"),
        ("1.2", "预测性维护", "智能制造"),
        ("2.1", "电网调度大模型", "智慧能源"),
        ("2.2", "新能源功率预测", "智慧能源"),
    ]
    path = tmp_path / "d.docx"
    path.write_bytes(pdf_case().topics)
    assert [(t.code, t.direction) for t in read_topics(path)] == [
        ("M1", "海洋观测"),
        ("M2", "海洋观测"),
        ("M3", "海洋工程"),
    ]


def test_new_calls_read_filled_copies_through_real_servers(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    _needs_office()
    cases = [make() for make in CASES]
    calls = [open_call(case, tmp_path / case.call_id) for case in cases]
    config = _config(tmp_path, imap_server, smtp_sink, calls)

    expected: dict[str, tuple[FormCase, Applicant]] = {}
    sent_files: dict[str, list[Path]] = {}
    number = 0
    for case in cases:
        address = f"{case.call_id}@fund.example.org"
        for applicant in case.applicants:
            number += 1
            filled = case.filled(applicant)
            sample = tmp_path / case.call_id / f"filled-{number}.{case.form_format}"
            sample.write_bytes(filled)
            sent_files.setdefault(case.call_id, []).append(sample)
            raw = _message(address, applicant, filled, case.form_format, number)
            imap_server.append(MAILBOX_USER, raw, datetime.fromisoformat(f"2025-09-01T10:{number:02d}:00+08:00"))
            expected[f"<call-setup-{number}-{address}>"] = (case, applicant)

    # call check: the blank form has every field, blank; the samples are read right
    for case in cases:
        done = _mailbot("call", "check", case.call_id, *map(str, sent_files[case.call_id]), config=config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "NOT FOUND" not in done.stdout and "OK: every field" in done.stdout
        first = case.applicants[0].expected
        for name in ("project_title", "applicant_name", "institution"):
            assert str(first[name]) in done.stdout, (case.call_id, name)

    settings = parse_settings(tomllib.loads(config.read_text(encoding="utf-8")), str(config))
    with Worker(settings) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        with bot.store.sessions() as session:
            records = {record["message_id"]: record for record in export_records(session)}
    acks = _acknowledgements(smtp_sink)
    from storage.db import make_engine, session_factory
    from storage.models import Message

    engine = make_engine(settings.database_url)
    with session_factory(engine)() as session:
        read = {m.message_id: (m.reading or {}).get("form") or {} for m in session.query(Message)}
    engine.dispose()
    for message_id, (case, applicant) in expected.items():
        record = records[message_id]
        assert record["call"] == case.call_id, message_id
        assert record["outcome"] == applicant.outcome, (message_id, record["reason"], record["explanation"])
        values = {name: (found or {}).get("value") for name, found in (read[message_id].get("fields") or {}).items()}
        assert {name: values.get(name) for name in applicant.expected} == applicant.expected, case.call_id
        subject, body = acks[message_id]
        assert case.name_zh in body, case.call_id
        call = settings.call_by_id(case.call_id)
        assert record["reference"].startswith(call.reference_prefix + "-")
        assert record["reference"] in subject or record["reference"] in body

    # the coordinators' digest of a call made this way, from its settings alone (as it stands today)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    for case in (cases[0], cases[2]):
        preview = tmp_path / f"{case.call_id}-digest.html"
        done = _mailbot("digest", "--call", case.call_id, "--date", today, "--preview", str(preview), config=config)
        assert done.returncode == 0, done.stderr
        assert case.name_zh in done.stdout and case.name_zh in preview.read_text(encoding="utf-8")
        given = next(records[m]["reference"] for m, (c, _) in expected.items() if c is case)
        assert given in done.stdout, case.call_id  # the application, by the reference it was given


def test_calls_sharing_one_address_are_told_apart_by_their_forms(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    shared = "office@fund.example.org"
    team, above = team_case(), above_case()
    calls = [
        open_call(team, tmp_path / "team", address=shared),
        open_call(above, tmp_path / "above", address=shared),
        # next year's round, on the very same form: only the subject can tell
        open_call(
            team, tmp_path / "team-next", name_zh="青年创新基金（2026年度）", call_id="youth-2026", address=shared
        ),
    ]
    config = _config(tmp_path, imap_server, smtp_sink, calls)
    settings = parse_settings(tomllib.loads(config.read_text(encoding="utf-8")), str(config))
    team_applicant = team.applicants[0]
    mails = [
        (above.applicants[0], above.filled(above.applicants[0]), "cross-2025", "accepted"),
        (
            Applicant(
                team_applicant.values,
                team_applicant.expected,
                "accepted",
                team_applicant.team,
                subject="青年创新基金（2026年度）申报",
            ),
            team.filled(team_applicant),
            "youth-2026",
            "accepted",
        ),
        (team_applicant, team.filled(team_applicant), None, "unreadable"),
    ]
    for number, (applicant, data, _, _) in enumerate(mails, start=1):
        raw = _message(shared, applicant, data, "docx", number)
        imap_server.append(MAILBOX_USER, raw, datetime.fromisoformat(f"2025-09-01T11:{number:02d}:00+08:00"))
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
        with bot.store.sessions() as session:
            records = {record["message_id"]: record for record in export_records(session)}
    acks = _acknowledgements(smtp_sink)
    for number, (applicant, _, call_id, outcome) in enumerate(mails, start=1):
        message_id = f"<call-setup-{number}-{shared}>"
        record = records[message_id]
        assert record["outcome"] == outcome, (number, record["explanation"])
        if call_id is not None:
            assert record["call"] == call_id
            assert {name: record["fields"].get(name) for name in ("applicant_name", "institution")} == {
                name: applicant.expected[name] for name in ("applicant_name", "institution")
            }
            assert settings.call_by_id(call_id).name_zh in acks[message_id][1]
        else:
            assert record["reason"] == "ambiguous-call"
            queued = list((settings.queue_dir).glob("*/reason.json"))
            assert len(queued) == 1
            reason = json.loads(queued[0].read_text(encoding="utf-8"))
            assert "youth-2025" in reason["diagnostics"]["detail"] and "youth-2026" in reason["diagnostics"]["detail"]
            # the admin names the call, and the bot reads the form as that call's
            done = _mailbot("queue", "retry", record["reference"], "--call", "youth-2025", config=config)
            assert done.returncode == 0, done.stderr
            with Worker(settings) as bot, bot.store.sessions() as session:
                retried = {r["message_id"]: r for r in export_records(session)}[message_id]
            assert (retried["call"], retried["outcome"]) == ("youth-2025", "accepted")
            assert retried["fields"]["applicant_name"] == applicant.expected["applicant_name"]


def test_call_check_reads_the_seed_form_and_mailed_samples(tmp_path: Path, shared_dir: Path, corpus_dir: Path) -> None:
    """``call check`` on a call whose block names its blank form, with samples as they arrived (.eml)."""
    raw = tomllib.loads((REPO / "config.example.toml").read_text(encoding="utf-8"))
    raw["call"][0]["form"] = str(shared_dir / "corpus" / "forms" / "smp-zhipu-2024-申报表.docx")
    raw["storage"] = {"data_dir": str(tmp_path / "data")}
    config = tmp_path / "mailbot.toml"
    config.write_text(tomli_w.dumps(raw), encoding="utf-8")
    truth = {p.stem: json.loads(p.read_text()) for p in corpus_dir.glob("smp-00*.json")}
    samples = sorted(name for name, info in truth.items() if info["outcome"] == "accepted")[:2]
    done = _mailbot("call", "check", "smp-zhipu-2024", *(str(corpus_dir / f"{n}.eml") for n in samples), config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:-1]}
    for name in samples:
        for field_name in ("applicant_name", "institution", "email", "topic"):
            assert str(truth[name]["fields"][field_name]) in rows[field_name], (name, field_name)
    # a call made by hand names no blank form: call check says so instead of guessing
    missing = _mailbot("call", "check", "caai-ant-2024", config=config)
    assert missing.returncode == 2 and "names no blank form" in missing.stderr


def _call(call_id: str, name_zh: str, fields: list[tuple[str, str, list[str]]]) -> CallSettings:
    return CallSettings.model_validate(
        {
            "id": call_id,
            "name_zh": name_zh,
            "name_en": name_zh,
            "reference_prefix": call_id.split("-")[0].upper()[:8] + "25",
            "addresses": ["office@fund.example.org"],
            "opens": "2025-01-01T00:00:00+08:00",
            "deadline": "2026-01-01T00:00:00+08:00",
            "sender": {"address": "office@fund.example.org"},
            "field": [{"name": name, "kind": kind, "labels": labels} for name, kind, labels in fields],
        }
    )


def test_routing_prefers_the_call_that_explains_the_whole_form() -> None:
    """A call whose few labels every form has (a subset) does not tie with the call the form is."""
    case = team_case()
    applicant = case.applicants[0]
    document = make_docx(case.parts, applicant.values, applicant.team)
    full = _call(
        "youth-2025",
        "青年创新基金",
        [
            ("project_title", "text", ["课题名称"]),
            ("applicant_name", "name", ["负责人姓名"]),
            ("title", "title", ["职称"]),
            ("institution", "institution", ["工作单位"]),
            ("email", "email", ["电子邮箱"]),
            ("phone", "phone", ["手机号码"]),
            ("topic", "topic", ["选题"]),
            ("partner", "text", ["合作单位"]),
        ],
    )
    subset = _call(
        "small-2025",
        "小额资助",
        [
            ("project_title", "text", ["课题名称"]),
            ("applicant_name", "name", ["负责人姓名"]),
            ("topic", "topic", ["选题"]),
        ],
    )

    def reading(call: CallSettings, subject: str) -> Submission:
        form = read_document(document, "申请书.docx", call.form_spec)
        assert isinstance(form, FormReading)
        return Submission(replace(EMPTY_ENVELOPE, subject=subject), form=form)

    neutral = {call.id: reading(call, "申报材料") for call in (full, subset)}
    assert choose([subset, full], neutral).call_id == "youth-2025"
    assert choose([full, subset], neutral).call_id == "youth-2025"
    # the same form for two calls: a tie that only the subject breaks
    twin = full.model_copy(update={"id": "youth-2026", "name_zh": "青年创新基金2026"})
    same = {"youth-2025": neutral["youth-2025"], "youth-2026": reading(twin, "申报材料")}
    assert choose([full, twin], same).call_id is None
    named = {"youth-2025": reading(full, "青年创新基金2026 申报"), "youth-2026": reading(twin, "青年创新基金2026 申报")}
    assert choose([full, twin], named).call_id == "youth-2026"


def test_required_fields_are_asked_and_blocks_checked(tmp_path: Path, shared_dir: Path) -> None:
    form = tmp_path / "blank.docx"
    form.write_bytes(english_case().blank())
    new = NewCall(
        id="fellowship-2025",
        name_zh="研究奖学金",
        name_en="Research Fellowship",
        deadline=datetime.fromisoformat("2026-01-01T00:00:00+08:00"),
        opens=datetime.fromisoformat("2025-01-01T00:00:00+08:00"),
        addresses=("fellowship@fund.example.org",),
        reference_prefix="FELLOW25",
    )
    asked: list[tuple[list[str], list[str]]] = []

    def ask(names: list[str], default: list[str]) -> tuple[str, ...]:
        asked.append((names, default))
        return ("project_title", "email")

    block, call = new_call(new, form, ask=ask)
    assert "required = true" in block
    assert asked and "career_stage" in asked[0][0]
    assert set(asked[0][1]) == {"project_title", "applicant_name", "institution", "topic", "email", "phone"}
    assert {field.name for field in call.field if field.required} == {"project_title", "email"}
    assert call.required_one_of == []
    with pytest.raises(CallSetupError, match="does not have: fax"):
        new_call(replace(new, required=("fax",)), form)
    # beside the configured calls: a reference prefix already in use is refused
    base = tomllib.loads((REPO / "config.example.toml").read_text(encoding="utf-8"))
    with pytest.raises(CallSetupError, match="reference_prefix"):
        new_call(replace(new, reference_prefix="SMP24"), form, base=base)
    # without --address, the address the blank form itself names
    seed = shared_dir / "corpus" / "forms" / "smp-zhipu-2024-申报表.docx"
    _, from_form = new_call(replace(new, addresses=()), seed)
    assert from_form.addresses == ["min.gao@aminer.cn"]


@pytest.mark.parametrize(
    ("form", "topics", "prefix"),
    [("smp-zhipu-2024-申报表.docx", "smp-zhipu-2024-topics.json", "smp"),
     ("caai-ant-2024-Proposal模板.docx", "caai-ant-2024-topics.json", "caai")],
)  # fmt: skip
def test_blocks_from_the_seed_forms_read_the_corpus_as_the_truth_says(
    shared_dir: Path, corpus_dir: Path, form: str, topics: str, prefix: str
) -> None:
    """The seed calls opened from their blank forms alone read every dev-corpus form right; a field
    mailbot does not know ("是否获第一期资助") is read under the name call new gave it."""
    forms = shared_dir / "corpus" / "forms"
    new = NewCall(
        id=f"{prefix}-again",
        name_zh="again",
        name_en="again",
        deadline=datetime.fromisoformat("2030-01-01T00:00:00+08:00"),
        opens=datetime.fromisoformat("2020-01-01T00:00:00+08:00"),
        addresses=("office@fund.example.org",),
        reference_prefix="AGAIN24",
    )
    _, call = new_call(new, forms / form, forms / topics)
    names = {spec.name for spec in call.field}
    kinds = {spec.name: spec.kind for spec in call.field}
    if prefix == "caai":  # the budget table's items sit under "金额（万元） Amount"
        assert kinds["equipment"] == kinds["total"] == "money"
    own_names = {"prior_grant": next((f.name for f in call.field if f.kind == "yesno"), "")}
    checked = 0
    for path in sorted(corpus_dir.glob(f"{prefix}-*.json")):
        truth = json.loads(path.read_text(encoding="utf-8"))
        if not truth.get("fields"):
            continue
        submission = read_message(path.with_suffix(".eml").read_bytes(), call.form_spec)
        assert submission.form is not None, path.stem
        values = submission.form.values()
        for name, value in truth["fields"].items():
            read_as = name if name in names else own_names[name]
            assert values.get(read_as) == value, (path.stem, name)
            checked += 1
    assert checked > 200
