"""Word 97-2003 (.doc) and WPS (.wps) forms: read natively, and through LibreOffice when installed.

The legacy files are made at test time: Word forms built here (and the filled forms of the dev
corpus) are converted to Word 97 format by LibreOffice, once per session. Read natively, each must
give what the .docx it was made from gives (and the corpus truth); read as LibreOffice's conversion
back to .docx, the same fields. A few files Word itself wrote (tests/fixtures/doc) check what
LibreOffice never writes: several pieces, 8-bit text, Word's own marks.
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import random
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import olefile
import pytest
from sqlalchemy import select

from mailbot.embedded import SmtpSink
from mailbot.export import export_records
from mailbot.worker import Worker
from parsers.documents import read_document
from parsers.errors import CannotRead
from parsers.layout import Grid, Line
from parsers.limits import LEGACY_WORD_ENV, Limits, legacy_word_from_environment
from parsers.message import read_message
from parsers.model import FieldScalar, FormReading, Unreadable
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec
from parsers.word97.document import read_doc
from storage.models import Message
from tests.conftest import ImapServer, make_settings
from tests.parsers.builders import (
    EXPECTED,
    NOTES,
    SMP_ROWS,
    W_NS,
    body_xml_form,
    message,
    mime_part,
    paragraph_form,
    table_form,
    text_part,
    w_paragraph,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "doc"
NATIVE = Limits(legacy_word="native")
LIBREOFFICE = Limits(legacy_word="libreoffice")
WPS_TYPE = "application/kswps"


@dataclass(frozen=True)
class Shape:
    """A form built as .docx, the call it belongs to and values it must give."""

    call: str
    build: Callable[[], bytes]
    expected: Mapping[str, object]


# Word always ends a document with a paragraph, never with a table; python-docx lets a test end it
# with one, and LibreOffice 7.4 then writes a .doc whose last table it cannot read back itself.
END = w_paragraph("")


def _cell(text: str, props: str = "") -> str:
    return f"<w:tc><w:tcPr>{props}</w:tcPr><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:tc>"


def _merged_group() -> bytes:
    group = '<w:vMerge w:val="restart"/>'
    rows = [
        [_cell("申请人基本信息", group), _cell("申请人姓名"), _cell("李 四"), _cell("性别"), _cell("女")],
        [_cell("", "<w:vMerge/>"), _cell("所在单位"), _cell("北京大学", '<w:gridSpan w:val="3"/>')],
        [_cell("", "<w:vMerge/>"), _cell("项目名称"), _cell("大模型价值观测量", '<w:gridSpan w:val="3"/>')],
        [_cell("申报课题"), _cell("5.3", '<w:gridSpan w:val="4"/>')],
    ]
    table = f"<w:tbl {W_NS}><w:tblGrid>" + '<w:gridCol w:w="1800"/>' * 5 + "</w:tblGrid>"
    table += "".join("<w:tr>" + "".join(row) + "</w:tr>" for row in rows) + "</w:tbl>"
    return body_xml_form([table, END], before=["申 报 表"])


def _fields_and_checkboxes() -> bytes:
    def text_field(label: str, value: str) -> str:
        return (
            f"<w:p {W_NS}><w:r><w:t>{label}：</w:t></w:r>"
            '<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:textInput/></w:ffData></w:fldChar></w:r>'
            '<w:r><w:instrText> FORMTEXT </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
            f'<w:r><w:t>{value}</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        )

    def checkbox(checked: bool) -> str:
        state = "<w:checked/>" if checked else '<w:checked w:val="0"/>'
        return (
            f'<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:checkBox><w:sizeAuto/>{state}</w:checkBox>'
            "</w:ffData></w:fldChar></w:r><w:r><w:instrText> FORMCHECKBOX </w:instrText></w:r>"
            '<w:r><w:fldChar w:fldCharType="end"/></w:r>'
        )

    grant = f"<w:p {W_NS}><w:r><w:t>是否获第一期资助：</w:t></w:r>{checkbox(False)}<w:r><w:t>是 </w:t></w:r>"
    grant += f"{checkbox(True)}<w:r><w:t>否</w:t></w:r></w:p>"
    return body_xml_form(
        [
            text_field("项目名称", "表单域项目"),
            text_field("申请人姓名", "孙八"),
            text_field("所在单位", "同济大学"),
            text_field("申报课题", "9.2"),
            grant,
        ]
    )


def _hyperlinked_email_and_tracked_changes() -> bytes:
    """An e-mail address as a HYPERLINK field (instruction dropped), a name edited with tracked changes."""
    link = (
        f"<w:p {W_NS}><w:r><w:t>电子邮箱：</w:t></w:r>"
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        '<w:r><w:instrText xml:space="preserve"> HYPERLINK "mailto:zhou@example.edu.cn" </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>zhou@example.edu.cn</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )
    edited = (
        f"<w:p {W_NS}><w:r><w:t>申请人姓名：</w:t></w:r>"
        '<w:del w:id="1" w:author="a" w:date="2024-09-01T00:00:00Z"><w:r><w:delText>周旧名</w:delText></w:r></w:del>'
        '<w:ins w:id="2" w:author="a" w:date="2024-09-01T00:00:00Z"><w:r><w:t>周新名</w:t></w:r></w:ins></w:p>'
    )
    lines = [
        w_paragraph("项目名称：超链接与修订"),
        edited,
        link,
        w_paragraph("所在单位：复旦大学"),
        w_paragraph("申报课题：2.1"),
    ]
    return body_xml_form(lines)


def _nested_table() -> bytes:
    inner = (
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>手机</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>13900002222</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
    )
    rows = [("项目名称", "嵌套表格项目"), ("申请人姓名", "周九"), ("申报课题", "4.1")]
    outer = f"<w:tbl {W_NS}>" + "".join(f"<w:tr>{_cell(label)}{_cell(value)}</w:tr>" for label, value in rows)
    outer += f"<w:tr>{_cell('联系方式')}<w:tc>{inner}<w:p/></w:tc></w:tr></w:tbl>"
    return body_xml_form([outer, END])


def _table_in_a_text_box() -> bytes:
    rows = [("项目名称", "文本框表格项目"), ("申请人姓名", "钱七"), ("所在单位", "南京大学"), ("申报课题", "7.1")]
    table = "<w:tbl>" + "".join(f"<w:tr>{_cell(label)}{_cell(value)}</w:tr>" for label, value in rows) + "</w:tbl>"
    drawing = (
        f'<w:p {W_NS} xmlns:v="urn:schemas-microsoft-com:vml"><w:r><w:pict><v:shape style="width:300pt;height:200pt">'
        f"<v:textbox><w:txbxContent>{table}<w:p/></w:txbxContent></v:textbox></v:shape></w:pict></w:r></w:p>"
    )
    return body_xml_form([w_paragraph("申 报 表"), drawing, END])


PARAGRAPH_LINES = [
    "申 报 表",
    "项目名称：基于大模型的中文作文自动批改研究",
    "申请人姓名：张 伟\u3000\u3000性别：男",
    "出生年月：1985.03\u3000\u3000职称：副教授",
    "最高学位：博士\u3000\u3000院系：计算机学院",
    "所在单位：清华大学",
    "手机：138-1234-5678\u3000\u3000电子邮箱：ZhangWei＠Tsinghua.edu.cn",
    "申报课题：课题3.2：自动评测与作文批改",
    "申请经费（万元）：20万元",
    "是否获第一期资助：否",
    "申请人（签字）：\u3000\u3000\u3000\u3000 日期：\u3000\u3000年\u3000\u3000月",
    *NOTES,
]
BILINGUAL_ROWS = [
    ["项目名称\nProject Title", "大模型幻觉检测与缓解关键技术研究"],
    ["项目负责人 PI Name（必填）", "宋  永刚", "性别\nGender", "Male"],
    ["职称 Title", "副教授", "学位\nDegree", "博士"],
    ["依托单位\nInstitution", "深圳大学"],
    ["邮箱 Email", " song.yonggang@szu.edu.cn ", "电话 Phone", " 130 4027 5979 "],
    ["课题编号\nTopic No.", "ANT-17、幻觉检测与缓解", "研究方向\nResearch Direction", "大模型安全"],
    ["申请金额（万元）\nBudget (10k CNY)", "30"],
]
BILINGUAL_EXPECTED: dict[str, FieldScalar] = {
    "project_title": "大模型幻觉检测与缓解关键技术研究",
    "applicant_name": "宋永刚",
    "gender": "男",
    "title": "副教授",
    "degree": "博士",
    "institution": "深圳大学",
    "email": "song.yonggang@szu.edu.cn",
    "phone": "13040275979",
    "topic": "ANT-17",
    "direction": "大模型安全",
    "budget": 30,
}
EMPTY_CELLS_ROWS = [
    [row[0], "", *row[2:3], "", *row[4:]] if row[0] in ("申请人姓名", "出生年月") else row for row in SMP_ROWS
]

SHAPES: dict[str, Shape] = {
    "smp-table": Shape("smp-zhipu-2024", lambda: table_form(SMP_ROWS), dict(EXPECTED)),
    "smp-table-blank-cells": Shape(
        "smp-zhipu-2024",
        lambda: table_form(EMPTY_CELLS_ROWS),
        EXPECTED | {"applicant_name": None, "gender": None, "title": None},
    ),
    "caai-bilingual": Shape(
        "caai-ant-2024",
        lambda: table_form(BILINGUAL_ROWS, before=["项目申请书 Proposal"], after=["填写说明 Instructions："]),
        BILINGUAL_EXPECTED,
    ),
    "smp-paragraphs": Shape("smp-zhipu-2024", lambda: paragraph_form(PARAGRAPH_LINES), dict(EXPECTED)),
    "smp-merged-cells": Shape(
        "smp-zhipu-2024",
        _merged_group,
        {"applicant_name": "李四", "gender": "女", "institution": "北京大学", "project_title": "大模型价值观测量"}
        | {"topic": "5.3"},
    ),
    "smp-value-below": Shape(
        "smp-zhipu-2024",
        lambda: table_form(
            [
                ["项目名称", "申请人姓名", "所在单位", "申报课题"],
                ["大模型价值观测量", "王五", "南开大学", "5.3"],
                ["电子邮箱", "手机", "性别", "职称"],
                ["wangwu@nankai.edu.cn", "13800001111", "男", "教授"],
            ],
            after=[""],
        ),
        {"project_title": "大模型价值观测量", "applicant_name": "王五", "institution": "南开大学", "topic": "5.3"}
        | {"email": "wangwu@nankai.edu.cn", "phone": "13800001111", "gender": "男", "title": "教授"},
    ),
    "caai-under-label": Shape(
        "caai-ant-2024",
        lambda: table_form(
            [
                ["项目名称\nProject Title\n大模型长上下文建模研究"],
                ["项目负责人\n吕婉婷", "依托单位 Institution\n四川大学"],
                ["课题编号 Topic No.：ANT07"],
                ["电话 Phone 130 4027 5979"],
            ],
            after=[""],
        ),
        {"project_title": "大模型长上下文建模研究", "applicant_name": "吕婉婷", "institution": "四川大学"}
        | {"topic": "ANT-07", "phone": "13040275979"},
    ),
    "smp-form-fields": Shape(
        "smp-zhipu-2024",
        _fields_and_checkboxes,
        {"project_title": "表单域项目", "applicant_name": "孙八", "institution": "同济大学", "topic": "9.2"}
        | {"prior_grant": False},
    ),
    "smp-hyperlink-tracked": Shape(
        "smp-zhipu-2024",
        _hyperlinked_email_and_tracked_changes,
        {"project_title": "超链接与修订", "applicant_name": "周新名", "email": "zhou@example.edu.cn"}
        | {"institution": "复旦大学", "topic": "2.1"},
    ),
    "smp-text-box-table": Shape(
        "smp-zhipu-2024",
        _table_in_a_text_box,
        {"project_title": "文本框表格项目", "applicant_name": "钱七", "institution": "南京大学", "topic": "7.1"},
    ),
    "smp-nested-table": Shape(
        "smp-zhipu-2024",
        _nested_table,
        {"project_title": "嵌套表格项目", "applicant_name": "周九", "topic": "4.1", "phone": "13900002222"},
    ),
}
DEV_FORMS_PER_LAYOUT = 3  # of each call and layout, so that the conversion stays quick


def convert_all(soffice: str, documents: dict[str, bytes], source: str, target: str) -> dict[str, bytes]:
    """Every document converted by one LibreOffice run (``target`` as --convert-to takes it)."""
    with tempfile.TemporaryDirectory(prefix="mailbot-test-doc-") as folder:
        work = Path(folder)
        for number, data in enumerate(documents.values()):
            (work / f"form{number}.{source}").write_bytes(data)
        command = [soffice, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless"]
        command += ["--convert-to", target, "--outdir", str(work / "out")]
        command += [str(work / f"form{number}.{source}") for number in range(len(documents))]
        subprocess.run(command, capture_output=True, timeout=600, check=True)
        extension = target.split(":", 1)[0]
        return {
            name: (work / "out" / f"form{number}.{extension}").read_bytes() for number, name in enumerate(documents)
        }


def to_legacy_word(soffice: str, documents: dict[str, bytes]) -> dict[str, bytes]:
    return convert_all(soffice, documents, "docx", "doc:MS Word 97")


@dataclass(frozen=True)
class DevForm:
    name: str  # the corpus message
    call: str
    attachment: str
    docx: bytes
    fields: dict[str, FieldScalar]


def dev_forms(corpus_dir: Path) -> list[DevForm]:
    """The filled .docx forms of the dev corpus, a few of each call and layout."""
    chosen: list[DevForm] = []
    taken: dict[tuple[str, str], int] = {}
    for truth_file in sorted(corpus_dir.glob("*.json")):
        if truth_file.name == "manifest.json":
            continue
        info = json.loads(truth_file.read_text(encoding="utf-8"))
        form = info.get("form") or {}
        if form.get("format") != "docx" or not info.get("fields"):
            continue
        key = (info["call"], form.get("layout", ""))
        if taken.get(key, 0) >= DEV_FORMS_PER_LAYOUT:
            continue
        parsed = email.message_from_bytes(
            (corpus_dir / f"{truth_file.stem}.eml").read_bytes(), policy=email.policy.default
        )
        for part in parsed.walk():
            if part.get_filename() == form["attachment"]:
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                chosen.append(DevForm(truth_file.stem, info["call"], form["attachment"], payload, info["fields"]))
                taken[key] = taken.get(key, 0) + 1
                break
    return chosen


@pytest.fixture(scope="session")
def legacy_forms(soffice: str, corpus_dir: Path) -> dict[str, bytes]:
    """Every shape above and the chosen dev forms as Word 97 files (name -> .doc bytes)."""
    documents = {name: shape.build() for name, shape in SHAPES.items()}
    documents |= {f"dev:{form.name}": form.docx for form in dev_forms(corpus_dir)}
    return to_legacy_word(soffice, documents)


@pytest.fixture(scope="session")
def converted_back(soffice: str, legacy_forms: dict[str, bytes]) -> dict[str, bytes]:
    """What LibreOffice makes of each legacy form: the .docx the "libreoffice" reader reads.

    One LibreOffice run for all of them, as parsers.convert would convert each (one run each is
    several seconds); test_the_libreoffice_reader_converts shows the reader itself on one form.
    """
    return convert_all(soffice, legacy_forms, "doc", "docx")


def spec_of(call: str, smp_spec: FormSpec, caai_spec: FormSpec) -> FormSpec:
    return smp_spec if call == "smp-zhipu-2024" else caai_spec


def read_with(data: bytes, filename: str, spec: FormSpec, limits: Limits) -> FormReading:
    reading = read_document(data, filename, spec, limits)
    assert isinstance(reading, FormReading), (filename, limits.legacy_word, reading)
    return reading


def all_values(reading: FormReading, spec: FormSpec) -> dict[str, FieldScalar]:
    return {field.name: reading.value(field.name) for field in spec.fields}


# --- both readers, every generated form ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_native_reading_is_the_docx_reading(
    legacy_forms: dict[str, bytes], name: str, smp_spec: FormSpec, caai_spec: FormSpec
) -> None:
    """The .doc read natively gives what the .docx it was made from gives, and the values expected."""
    shape = SHAPES[name]
    spec = spec_of(shape.call, smp_spec, caai_spec)
    native = read_with(legacy_forms[name], "申报表.doc", spec, NATIVE)
    original = read_with(shape.build(), "申报表.docx", spec, NATIVE)
    assert native.kind == "doc"
    assert {key: native.value(key) for key in shape.expected} == shape.expected
    assert all_values(native, spec) == all_values(original, spec)
    assert native.missing == original.missing


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_libreoffice_and_native_give_the_same_fields(
    legacy_forms: dict[str, bytes], converted_back: dict[str, bytes], name: str, smp_spec: FormSpec, caai_spec: FormSpec
) -> None:
    spec = spec_of(SHAPES[name].call, smp_spec, caai_spec)
    native = read_with(legacy_forms[name], "申报表.doc", spec, NATIVE)
    converted = read_with(converted_back[name], "申报表.docx", spec, NATIVE)
    assert all_values(native, spec) == all_values(converted, spec)
    assert native.missing == converted.missing


def test_the_libreoffice_reader_converts(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    reading = read_with(legacy_forms["smp-table"], "申报表.doc", smp_spec, LIBREOFFICE)
    assert reading.kind == "doc"
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


def test_dev_corpus_forms_read_the_same_both_ways(
    legacy_forms: dict[str, bytes],
    converted_back: dict[str, bytes],
    corpus_dir: Path,
    smp_spec: FormSpec,
    caai_spec: FormSpec,
) -> None:
    forms = dev_forms(corpus_dir)
    layouts = {(form.call, form.name.split("-")[0]) for form in forms}
    assert len(forms) >= 6 and len(layouts) == 2, "both calls' filled forms are in the dev corpus"
    for form in forms:
        spec = spec_of(form.call, smp_spec, caai_spec)
        data = legacy_forms[f"dev:{form.name}"]
        filename = form.attachment.rsplit(".", 1)[0] + ".doc"
        native = read_with(data, filename, spec, NATIVE)
        converted = read_with(converted_back[f"dev:{form.name}"], "form.docx", spec, NATIVE)
        assert {key: native.value(key) for key in form.fields} == form.fields, form.name
        assert all_values(native, spec) == all_values(converted, spec), form.name


def test_native_grid_matches_the_docx_layout(legacy_forms: dict[str, bytes]) -> None:
    """Merged cells keep Word's grid columns: a value spanning three columns starts in column 1."""
    blocks = read_doc(legacy_forms["smp-table"], "申报表.doc", NATIVE).blocks
    grids = [block for block in blocks if isinstance(block, Grid)]
    assert len(grids) == 1 and len(grids[0].rows) == len(SMP_ROWS)
    first, second = grids[0].rows[0], grids[0].rows[1]
    assert [(cell.text, cell.column, cell.span) for cell in first] == [
        ("项目名称", 0, 1),
        ("基于大模型的中文作文自动批改研究", 1, 3),
    ]
    assert [cell.text for cell in second] == SMP_ROWS[1]
    merged = read_doc(legacy_forms["smp-merged-cells"], "申报表.doc", NATIVE).blocks
    group = next(block for block in merged if isinstance(block, Grid))
    assert [cell.continued for cell in group.rows[1]][:1] == [True]


def test_deletion_marked_as_word_marks_it(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """Word sets sprmCFRMarkDel to 0x81 (the opposite of the style's), LibreOffice to 0x01: both delete.

    The generated file's deletion mark (sprm 0x0800, operand 0x01) is rewritten the way Word writes it;
    the same bytes may occur elsewhere in the file, so each occurrence is tried in turn.
    """
    doc = legacy_forms["smp-hyperlink-tracked"]
    mark = b"\x00\x08\x01"
    places = [index for index in range(len(doc)) if doc.startswith(mark, index)]
    assert places
    for place in places:
        as_word = doc[: place + 2] + b"\x81" + doc[place + 3 :]
        reading = read_with(as_word, "申报表.doc", smp_spec, NATIVE)
        assert reading.value("applicant_name") == "周新名", place


# --- Word's own files (Apache POI's test documents, tests/fixtures/doc/SOURCES.md) ---------------------


def test_a_table_made_by_word_97() -> None:
    blocks = read_doc((FIXTURES / "poi__simple-table.doc").read_bytes(), "simple-table.doc", NATIVE).blocks
    assert [type(block).__name__ for block in blocks] == ["Line", "Grid", "Line"]
    first, grid, last = blocks
    assert isinstance(first, Line) and "Word 97 \u2013 SR2" in first.text  # 0x96 in 8-bit text is an en dash
    assert isinstance(grid, Grid)
    assert [[cell.text for cell in row] for row in grid.rows] == [
        ["Cell 1,1", "Cell 1,2", "Cell 1,3"],
        ["Cell 2,1", "Cell 2,2", "Cell 2,3"],
    ]
    assert isinstance(last, Line) and last.text == "This text is below the table."


def test_pieces_of_8_bit_and_utf16_text() -> None:
    """Three pieces (8-bit, UTF-16LE, 8-bit): each read from where its own Pcd says."""
    blocks = read_doc((FIXTURES / "poi__Bug46610_2.doc").read_bytes(), "Bug46610_2.doc", NATIVE).blocks
    digits = "0123456789112345678921234567893123456789412345678901234567891123456789212345678931234567894123456" + "78"
    texts = [block.text for block in blocks if isinstance(block, Line)]
    assert len(texts) == 15 and texts.count(digits) == 14


def test_word_6_is_not_read_natively(smp_spec: FormSpec) -> None:
    reading = read_document((FIXTURES / "poi__Word6.doc").read_bytes(), "旧版.doc", smp_spec, NATIVE)
    assert isinstance(reading, Unreadable) and reading.reason == "unsupported-format"
    assert "LibreOffice" in reading.detail


def test_word_6_goes_to_libreoffice_when_installed(soffice: str, smp_spec: FormSpec) -> None:
    reading = read_document(
        (FIXTURES / "poi__Word6.doc").read_bytes(), "旧版.doc", smp_spec, Limits(legacy_word="auto")
    )
    assert reading is None  # converted and read: a letter, not a form


# --- the .wps of WPS Office, the way mail clients send it -------------------------------------------


def test_wps_attachment_is_read_natively(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    disposition = b'attachment; filename="=?UTF-8?B?55Sz5oql6KGoLndwcw==?="'  # 申报表.wps
    raw = message([text_part("附件是申报表。"), mime_part(legacy_forms["smp-table"], WPS_TYPE, disposition)])
    submission = read_message(raw, smp_spec, NATIVE)
    assert submission.form is not None, submission
    assert submission.form.kind == "wps" and submission.form.attachment == "申报表.wps"
    assert {name: submission.form.value(name) for name in EXPECTED} == EXPECTED


# --- choosing the reader ----------------------------------------------------------------------------


def test_the_reader_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEGACY_WORD_ENV, "native")
    assert Limits().legacy_word == "native"
    monkeypatch.setenv(LEGACY_WORD_ENV, "LibreOffice")
    assert legacy_word_from_environment() == "libreoffice"
    monkeypatch.setenv(LEGACY_WORD_ENV, "word")
    assert legacy_word_from_environment() == "auto"
    monkeypatch.delenv(LEGACY_WORD_ENV)
    assert Limits().legacy_word == "auto"


def test_without_libreoffice_the_native_reader_is_used(
    legacy_forms: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, smp_spec: FormSpec
) -> None:
    monkeypatch.setattr("parsers.convert.shutil.which", lambda name: None)
    monkeypatch.setattr("parsers.documents.office_binary", lambda: None)
    reading = read_with(legacy_forms["smp-table"], "申报表.doc", smp_spec, Limits(legacy_word="auto"))
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


def test_a_failing_libreoffice_falls_back_to_the_native_reader(
    legacy_forms: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, smp_spec: FormSpec
) -> None:
    def failing(data: bytes, source_extension: str, target: str, filename: str, timeout_s: float) -> bytes:
        raise CannotRead(Unreadable("timeout", filename, "LibreOffice took too long"))

    monkeypatch.setattr("parsers.documents.office_binary", lambda: "/usr/bin/soffice")
    monkeypatch.setattr("parsers.documents.convert", failing)
    reading = read_with(legacy_forms["smp-table"], "申报表.doc", smp_spec, Limits(legacy_word="auto"))
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED
    refused = read_document(legacy_forms["smp-table"], "申报表.doc", smp_spec, LIBREOFFICE)
    assert isinstance(refused, Unreadable) and refused.reason == "timeout"


# --- password-protected, broken and hostile files -----------------------------------------------------


def with_fib(doc: bytes, offset: int, layout: str, change: Callable[[int], int]) -> bytes:
    """A copy with the FIB value at ``offset`` (struct ``layout``) changed in place.

    The FIB starts the WordDocument stream, whose first sector is found through the directory.
    """
    with olefile.OleFileIO(io.BytesIO(doc)) as container:
        sector = container.sectorsize
        entry = container.direntries[container._find("WordDocument")]
        start = (entry.isectStart + 1) * sector
    changed = bytearray(doc)
    assert struct.unpack_from("<H", changed, start)[0] == 0xA5EC, "the FIB starts the stream's first sector"
    (current,) = struct.unpack_from(layout, changed, start + offset)
    struct.pack_into(layout, changed, start + offset, change(current))
    return bytes(changed)


def with_fib_flags(doc: bytes, flags: int) -> bytes:
    """FibBase's flags word with ``flags`` set (fEncrypted 0x0100, fObfuscated 0x8000).

    Only the flag is set, the text is left readable: a reader must believe the flag, as Word does.
    """
    return with_fib(doc, 10, "<H", lambda current: current | flags)


def test_a_fib_claiming_more_text_than_there_is(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """FibRgLw97.ccpText (at 64 + 12 with Word 97's csw of 14) far beyond the piece table: what is there is read."""
    claims = with_fib(legacy_forms["smp-table"], 64 + 12, "<i", lambda current: 0x7FFFFFFF)
    reading = read_with(claims, "申报表.doc", smp_spec, NATIVE)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


def test_without_paragraph_properties_the_cell_marks_make_the_table(
    legacy_forms: dict[str, bytes], smp_spec: FormSpec
) -> None:
    """lcbPlcfBtePapx (FibRgFcLcb97 pair 13, at 154 + 8 * 13 + 4) set to 0: rows found from the marks alone."""
    bare = with_fib(legacy_forms["smp-table"], 154 + 8 * 13 + 4, "<I", lambda current: 0)
    grids = [block for block in read_doc(bare, "申报表.doc", NATIVE).blocks if isinstance(block, Grid)]
    assert [[cell.text for cell in row] for row in grids[0].rows] == SMP_ROWS
    reading = read_with(bare, "申报表.doc", smp_spec, NATIVE)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


@pytest.mark.parametrize("flags", [0x0100, 0x8100], ids=["fEncrypted", "fEncrypted+fObfuscated"])
@pytest.mark.parametrize("limits", [NATIVE, Limits(legacy_word="auto")], ids=["native", "auto"])
def test_password_protected_doc_is_encrypted(
    legacy_forms: dict[str, bytes], smp_spec: FormSpec, flags: int, limits: Limits
) -> None:
    reading = read_document(with_fib_flags(legacy_forms["smp-table"], flags), "申报表.doc", smp_spec, limits)
    assert isinstance(reading, Unreadable) and reading.reason == "encrypted", reading


def test_obfuscated_flag_alone_is_ignored(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """[MS-DOC] FibBase: fObfuscated means nothing unless fEncrypted is set, as Word and LibreOffice read it."""
    reading = read_with(with_fib_flags(legacy_forms["smp-table"], 0x8000), "申报表.doc", smp_spec, NATIVE)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


def test_truncated_and_garbage_files_are_corrupt(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    doc = legacy_forms["smp-table"]
    candidates = {
        "signature only": doc[:8],
        "header only": doc[:512],
        "half": doc[: len(doc) // 2],
        "zeros after the header": doc[:512] + bytes(len(doc) - 512),
        "fake": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "WordDocument".encode("utf-16-le"),
    }
    for what, data in candidates.items():
        reading = read_document(data, "申报表.doc", smp_spec, NATIVE)
        assert isinstance(reading, Unreadable) and reading.reason == "corrupt", (what, reading)


def test_a_compound_file_without_word_text_is_not_word(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """A Works .wps or an Excel file renamed: a compound file with no WordDocument stream."""
    renamed = legacy_forms["smp-table"].replace("WordDocument".encode("utf-16-le"), "WorksContent".encode("utf-16-le"))
    reading = read_document(renamed, "旧文档.wps", smp_spec, NATIVE)
    assert isinstance(reading, Unreadable) and reading.reason == "unsupported-format", reading
    assert "WordDocument" in reading.detail


def mutate_word_stream(doc: bytes, seed: int, count: int) -> bytes:
    """``count`` random bytes of the WordDocument and table streams' sectors overwritten."""
    rng = random.Random(seed)
    changed = bytearray(doc)
    for _ in range(count):
        changed[rng.randrange(512, len(changed))] = rng.randrange(256)
    return bytes(changed)


def test_damaged_documents_end_in_fields_or_a_reason_quickly(
    legacy_forms: dict[str, bytes], smp_spec: FormSpec
) -> None:
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    for seed in range(150):
        data = mutate_word_stream(legacy_forms["smp-table"], seed, 1 + seed % 40)
        outcome: str
        try:
            text = read_doc(data, "x.doc", NATIVE)
        except CannotRead as exc:
            outcome = exc.reason.reason
            assert outcome in ("corrupt", "encrypted", "too-large", "unsupported-format"), exc.reason
        else:
            outcome = "read"
            assert isinstance(text.blocks, list)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert time.monotonic() - started < 60, "bounded work on damaged files"
    assert outcomes.get("read", 0) > 0, outcomes


def test_hostile_structures_are_refused(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """A piece table claiming more text than a form can hold, or pointing past the stream."""
    doc = legacy_forms["smp-table"]
    small = replace(NATIVE, doc_max_chars=10)
    with pytest.raises(CannotRead) as refused:
        read_doc(doc, "x.doc", small)
    assert refused.value.reason.reason == "too-large"
    few = replace(NATIVE, doc_max_pieces=0)
    with pytest.raises(CannotRead) as too_many:
        read_doc(doc, "x.doc", few)
    assert too_many.value.reason.reason == "too-large"


def test_hostile_documents_in_the_worker_pool(legacy_forms: dict[str, bytes], smp_spec: FormSpec) -> None:
    """Through the sandboxed workers, as production reads mail: a reason, no crashed or timed-out worker."""
    doc = legacy_forms["smp-table"]
    hostile = [doc[:700], mutate_word_stream(doc, 7, 400), with_fib_flags(doc, 0x0100), doc]
    raws = [
        message([text_part("申报表"), mime_part(data, "application/msword", b'attachment; filename="a.doc"')])
        for data in hostile
    ]
    with ParserPool(1, timeout_s=30, memory_mb=512, limits=NATIVE) as pool:
        results = [pool.submit(raw, smp_spec).result(timeout=60) for raw in raws]
    for submission in results[:3]:
        assert submission.form is None and submission.unreadable is not None
        assert submission.unreadable.attachment == "a.doc", submission.unreadable
    assert results[2].unreadable is not None and results[2].unreadable.reason == "encrypted"
    assert results[3].form is not None
    assert {name: results[3].form.value(name) for name in EXPECTED} == EXPECTED


# --- end to end: a .doc form with no LibreOffice, through Dovecot and aiosmtpd ----------------------------


def as_legacy_word(raw: bytes, attachment: str, legacy: bytes, extension: str, content_type: str) -> bytes:
    """The corpus message with its .docx form replaced by the same form in Word 97 format."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        if part.get_filename() == attachment:
            maintype, subtype = content_type.split("/")
            name = attachment.rsplit(".", 1)[0] + extension
            part.set_content(legacy, maintype=maintype, subtype=subtype, disposition="attachment", filename=name)
            return parsed.as_bytes(policy=email.policy.SMTP)
    raise AssertionError(f"{attachment} is not in the message")


def test_doc_forms_without_libreoffice_are_accepted_end_to_end(
    legacy_forms: dict[str, bytes],
    corpus_dir: Path,
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LEGACY_WORD_ENV, "native")  # as on a machine without LibreOffice
    chosen: dict[str, dict[str, Any]] = {}
    per_call: dict[str, int] = {}
    for form in dev_forms(corpus_dir):
        info = json.loads((corpus_dir / f"{form.name}.json").read_text(encoding="utf-8"))
        if info["outcome"] != "accepted" or per_call.get(form.call, 0) >= 2:
            continue
        per_call[form.call] = per_call.get(form.call, 0) + 1
        # the second of each call as WPS Office sends it
        extension, content_type = (".doc", "application/msword") if per_call[form.call] == 1 else (".wps", WPS_TYPE)
        original = (corpus_dir / f"{form.name}.eml").read_bytes()
        raw = as_legacy_word(original, form.attachment, legacy_forms[f"dev:{form.name}"], extension, content_type)
        imap_server.append(info["mailbox"], raw, datetime.fromisoformat(info["arrival"]))
        chosen[form.name] = info
    assert {info["call"] for info in chosen.values()} == {"smp-zhipu-2024", "caai-ant-2024"}
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        summary = bot.single_pass()
        assert summary.errors == []
        with bot.store.sessions() as session:
            records = {record["message_id"]: record for record in export_records(session)}
            diagnostics = {
                row.message_id: (row.reading or {}).get("diagnostics", []) for row in session.scalars(select(Message))
            }
    for name, info in chosen.items():
        record = records[info["message_id"]]
        assert record["outcome"] == "accepted", (name, record["reason"])
        expected = info["fields"] | ({"prior_grant": None} if "prior_grant" not in info["fields"] else {})
        # the export also carries the fields the truth does not record (出生年月, 研究方向)
        assert {key: record["fields"].get(key) for key in expected} == expected, name
        assert any("read natively" in line for line in diagnostics[info["message_id"]]), diagnostics
    acknowledged = {email.message_from_bytes(mail.raw).get("In-Reply-To", "") for mail in smtp_sink.received}
    assert {info["message_id"] for info in chosen.values()} <= acknowledged
