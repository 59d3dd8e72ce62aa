"""PDFs made from Word forms by LibreOffice at test time; image-only and broken PDFs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from parsers import read_document
from parsers.limits import Limits
from parsers.model import FormReading, Unreadable
from parsers.pdf_grid import page_tables
from parsers.spec import FormSpec
from tests.parsers.builders import EXPECTED, SMP_ROWS, paragraph_form, table_form, to_pdf


@pytest.fixture(scope="module")
def form_pdf(soffice: str) -> bytes:
    return to_pdf(table_form(SMP_ROWS))


def test_table_form_pdf(form_pdf: bytes, smp_spec: FormSpec) -> None:
    reading = read_document(form_pdf, "申报表.pdf", smp_spec)
    assert isinstance(reading, FormReading), reading
    assert reading.kind == "pdf"
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED
    assert reading.fields["project_title"].where.page == 1


def test_borderless_table_pdf_is_read_from_its_lines(soffice: str, smp_spec: FormSpec) -> None:
    rows = [
        ["项目名称", "大模型作文批改"],
        ["申请人姓名", "张 伟", "性别", "男"],
        ["所在单位", "清华大学"],
        ["申报课题", "3.2"],
    ]
    reading = read_document(to_pdf(table_form(rows, ruled=False)), "申报表.pdf", smp_spec)
    assert isinstance(reading, FormReading), reading
    assert reading.values() == {
        "project_title": "大模型作文批改",
        "applicant_name": "张伟",
        "gender": "男",
        "institution": "清华大学",
        "topic": "3.2",
    }


def test_long_pdf_stops_after_the_form(soffice: str, smp_spec: FormSpec) -> None:
    body = [f"第{number}段：本项目研究大模型在教育中的应用，" + "内容" * 300 for number in range(1, 40)]
    data = to_pdf(table_form(SMP_ROWS, after=body))
    limits = Limits(pdf_max_pages=60)
    reading = read_document(data, "申报表.pdf", smp_spec, limits)
    assert isinstance(reading, FormReading)
    assert reading.value("applicant_name") == "张伟"


def test_paragraph_form_pdf(soffice: str, smp_spec: FormSpec) -> None:
    lines = [
        "项目名称：大模型作文批改",
        "申请人姓名：李 雷",
        "所在单位：复旦大学",
        "申报课题：3.2",
        "手机：139 0000 1111",
    ]
    reading = read_document(to_pdf(paragraph_form(lines)), "form.pdf", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.values() == {
        "project_title": "大模型作文批改",
        "applicant_name": "李雷",
        "institution": "复旦大学",
        "topic": "3.2",
        "phone": "13900001111",
    }


def test_image_only_pdf_is_scanned(smp_spec: FormSpec) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 800), "white").save(buffer, format="PDF")
    reading = read_document(buffer.getvalue(), "申报表.pdf", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "scanned"


def test_truncated_pdf_is_corrupt(smp_spec: FormSpec) -> None:
    reading = read_document(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", "申报表.pdf", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "corrupt"


def test_password_pdf_is_encrypted(shared_dir: object, smp_spec: FormSpec) -> None:
    from pathlib import Path

    sample = Path(str(shared_dir)) / "hostile" / "pdf" / "pdfplumber__password-example.pdf"
    reading = read_document(sample.read_bytes(), "申报表.pdf", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "encrypted"


def test_legacy_doc_is_converted(soffice: str, smp_spec: FormSpec, tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    work = Path(str(tmp_path))
    (work / "form.docx").write_bytes(table_form(SMP_ROWS))
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--convert-to",
            "doc",
            "--outdir",
            str(work),
            str(work / "form.docx"),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    reading = read_document((work / "form.doc").read_bytes(), "申报表.doc", smp_spec)
    assert isinstance(reading, FormReading), reading
    assert reading.value("topic") == "3.2"


def test_legacy_doc_without_libreoffice(monkeypatch: pytest.MonkeyPatch, smp_spec: FormSpec) -> None:
    """Read natively (tests/parsers/test_doc.py): a broken one is corrupt, not a missing program."""
    monkeypatch.setattr("parsers.convert.shutil.which", lambda name: None)
    monkeypatch.setattr("parsers.documents.office_binary", lambda: None)
    fake_doc = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "WordDocument".encode("utf-16-le")
    reading = read_document(fake_doc, "申报表.doc", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "corrupt"


def test_ocr_hook_reads_a_scan_when_an_engine_is_there(monkeypatch: pytest.MonkeyPatch, smp_spec: FormSpec) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 800), "white").save(buffer, format="PDF")
    page = "项目名称：扫描件项目\n申请人姓名：郑一\n所在单位：厦门大学\n申报课题：2.3"
    monkeypatch.setattr("parsers.documents.ocr_engine", lambda: "tesseract")
    monkeypatch.setattr("parsers.documents.ocr_pdf_pages", lambda data, pages, timeout_s: [page])
    reading = read_document(buffer.getvalue(), "扫描.pdf", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.value("applicant_name") == "郑一"
    monkeypatch.setattr("parsers.documents.ocr_pdf_pages", lambda data, pages, timeout_s: ["看不清"])
    unread = read_document(buffer.getvalue(), "扫描.pdf", smp_spec)
    assert isinstance(unread, Unreadable) and unread.reason == "scanned"


def test_no_ocr_engine_is_installed_by_default() -> None:
    from parsers.ocr import engine

    assert engine() in (None, "rapidocr", "tesseract")


@pytest.mark.parametrize("variant", ["ruled", "spans", "unruled"])
def test_pdfium_tables_are_pdfplumbers(soffice: str, variant: str) -> None:
    """The cheap geometry must cut cells exactly as pdfplumber would, or fields would drift."""
    import pdfplumber
    import pypdfium2 as pdfium

    rows = [[*row, "备注 Notes"] if number % 3 == 0 else row for number, row in enumerate(SMP_ROWS)]
    form = table_form(rows if variant == "spans" else SMP_ROWS, ruled=variant != "unruled")
    data = to_pdf(form)
    document = pdfium.PdfDocument(data)
    try:
        page = document[0]
        tables = page_tables(page, page.get_textpage())
    finally:
        document.close()
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        assert tables == pdf.pages[0].extract_tables()


def test_rotated_page_is_left_to_pdfplumber(form_pdf: bytes) -> None:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(form_pdf)
    try:
        page = document[0]
        page.set_rotation(90)
        assert page_tables(page, page.get_textpage()) is None
    finally:
        document.close()
