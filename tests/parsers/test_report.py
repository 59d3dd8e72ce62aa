"""What ``mailbot parse`` shows."""

from __future__ import annotations

import json
from pathlib import Path

from parsers import read_document
from parsers.model import Unreadable
from parsers.report import format_reading, parse_files
from parsers.spec import FormSpec
from tests.parsers.builders import DOCX_TYPE, SMP_ROWS, message, mime_part, table_form, text_part


def test_reading_lists_every_field_with_confidence_and_place(smp_spec: FormSpec) -> None:
    reading = read_document(table_form(SMP_ROWS), "申报表.docx", smp_spec)
    text = format_reading(reading, smp_spec)
    assert "申报表.docx: smp-zhipu-2024 form" in text
    assert "applicant_name" in text and "张伟" in text and "申报表.docx, table 1, row 2" in text
    assert "birth" in text and "prior_grant" in text and "否 no" in text
    assert "missing: nothing" in text


def test_reasons_and_other_documents(smp_spec: FormSpec) -> None:
    assert "unreadable: encrypted" in format_reading(Unreadable("encrypted", "a.docx", "password"), smp_spec)
    assert "not a smp-zhipu-2024 form" in format_reading(None, smp_spec, "photo.jpg")


def test_parse_files_text_and_json(tmp_path: Path, smp_spec: FormSpec) -> None:
    form = tmp_path / "申报表.docx"
    form.write_bytes(table_form(SMP_ROWS))
    mail = tmp_path / "mail.eml"
    mail.write_bytes(
        message([text_part("x"), mime_part(form.read_bytes(), DOCX_TYPE, b'attachment; filename="f.docx"')])
    )
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 cut")
    text, ok = parse_files([form, mail], smp_spec)
    assert ok and "张伟" in text and "mail.eml: message <test.1@example.org>" in text
    output, ok = parse_files([form, broken, tmp_path / "absent.docx"], smp_spec, as_json=True)
    assert not ok
    results = json.loads(output)
    assert results[0]["reading"]["fields"]["topic"]["value"] == "3.2"
    assert results[1]["reading"]["reason"] == "corrupt"
    assert "error" in results[2]
