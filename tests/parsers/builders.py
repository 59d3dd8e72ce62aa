"""Documents and messages made at test time: Word forms in their many shapes, MIME by hand."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import docx
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls

SMP_ROWS = [
    ["项目名称", "基于大模型的中文作文自动批改研究"],
    ["申请人姓名", "张 伟", "性别", "男"],
    ["出生年月", "1985.03", "职称", "副教授"],
    ["最高学位", "博士", "院系", "计算机学院"],
    ["所在单位", "清华大学"],
    ["手机", "138-1234-5678", "电子邮箱", "ZhangWei＠Tsinghua.edu.cn"],
    ["申报方向", "方向3：大模型+教育"],
    ["申报课题", "课题3.2：自动评测与作文批改"],
    ["申请经费（万元）", "20万元", "是否获第一期资助", "否"],
]
EXPECTED = {
    "project_title": "基于大模型的中文作文自动批改研究",
    "applicant_name": "张伟",
    "gender": "男",
    "title": "副教授",
    "degree": "博士",
    "department": "计算机学院",
    "institution": "清华大学",
    "phone": "13812345678",
    "email": "zhangwei@tsinghua.edu.cn",
    "topic": "3.2",
    "budget": 20,
    "prior_grant": False,
}
NOTES = [
    "填表说明：",
    "1. “申报课题”请填写课题编号，如 课题5.1：大模型社会模拟与仿真；",
    "2. 请发送至 min.gao@aminer.cn，联系电话：010-12345678。",
]


def docx_bytes(document: docx.document.Document) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def table_form(
    rows: list[list[str]], *, before: list[str] | None = None, after: list[str] | None = None, ruled: bool = True
) -> bytes:
    """A form table: rows of label/value pairs; a short row's last cell spans the rest."""
    document = docx.Document()
    for text in before or ["SMP-智谱 AI 大模型交叉学科基金（第二期）", "申 报 表"]:
        document.add_paragraph(text)
    width = max(len(row) for row in rows)
    table = document.add_table(rows=len(rows), cols=width)
    if ruled:
        table.style = document.styles["Table Grid"]
    for row_number, row in enumerate(rows):
        cells = table.rows[row_number].cells
        if len(row) < width:
            cells[len(row) - 1].merge(cells[width - 1])
        for column, text in enumerate(row):
            cells[column].text = text
    for text in after if after is not None else ["申请人（签字）：　　　　　 日期：　　年　　月　　日", *NOTES]:
        document.add_paragraph(text)
    return docx_bytes(document)


def paragraph_form(lines: list[str]) -> bytes:
    document = docx.Document()
    for text in lines:
        document.add_paragraph(text)
    return docx_bytes(document)


def body_xml_form(fragments: list[str], *, before: list[str] | None = None) -> bytes:
    """A document whose body holds the given WordprocessingML fragments (each declaring ``W_NS``)."""
    document = docx.Document()
    for text in before or []:
        document.add_paragraph(text)
    body = document.element.body
    for fragment in fragments:
        body.insert(len(body) - 1, parse_xml(fragment))
    return docx_bytes(document)


W_NS = nsdecls("w")


def w_paragraph(text: str) -> str:
    return f'<w:p {W_NS}><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def office_binary() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def to_pdf(docx_data: bytes) -> bytes:
    binary = office_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "form.docx").write_bytes(docx_data)
        subprocess.run(
            [
                binary,
                f"-env:UserInstallation={(work / 'profile').as_uri()}",
                "--headless",
                "--convert-to",
                "pdf",
                "--outdir",
                str(work),
                str(work / "form.docx"),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return (work / "form.pdf").read_bytes()


def mime_part(data: bytes, content_type: str, disposition: bytes | None = None, encoding: str = "base64") -> bytes:
    """One MIME part; ``disposition`` is the raw Content-Disposition value (any bytes)."""
    head = b"Content-Type: " + content_type.encode() + b"\r\n"
    if disposition is not None:
        head += b"Content-Disposition: " + disposition + b"\r\n"
    if encoding == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
        head += b"Content-Transfer-Encoding: base64\r\n"
    else:
        body = data
        head += b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n"
    return head + b"\r\n" + body


def message(
    parts: list[bytes],
    headers: dict[str, bytes] | None = None,
    subtype: str = "mixed",
    params: str = "",
    boundary: bytes = b"----=_Part_test_0001",
) -> bytes:
    head = {
        "From": b"=?UTF-8?B?5byg5Lyf?= <zhangwei@tsinghua.edu.cn>",
        "To": b"min.gao@aminer.cn",
        "Subject": b"=?GB2312?B?yerH67Hto6y8+7i9vP4=?=",
        "Message-ID": b"<test.1@example.org>",
        "Date": b"Sat, 07 Sep 2024 10:00:00 +0800",
        "MIME-Version": b"1.0",
    }
    head.update(headers or {})
    head["Content-Type"] = f'multipart/{subtype}; boundary="{boundary.decode()}"{params}'.encode()
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in head.items()) + b"\r\n"
    for part in parts:
        raw += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return raw + b"--" + boundary + b"--\r\n"


def text_part(text: str, charset: str = "utf-8", subtype: str = "plain") -> bytes:
    return mime_part(text.encode(charset), f'text/{subtype}; charset="{charset}"')


DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
