"""Every shape a Chinese applicant's mail takes (issue 19): archives, Outlook's wrappers, forwards,
Word's placeholders and tracked changes, and the file-type quirks of real mail clients.

Each shape is built here, around the same filled-in form, by benchmarks.shapes; the public samples
in tests/parsers/samples/ (see SOURCES.md there) show the readers on files other programs wrote.
"""

from __future__ import annotations

import io
import struct
import sys
from dataclasses import replace
from pathlib import Path

import py7zr
import pytest
import tnefparse

from benchmarks.containers import rar4_stored, seven_zip, tnef, zip_flagged_utf8_over_gbk
from benchmarks.shapes import (
    PLACEHOLDER_EN,
    PLACEHOLDER_ZH,
    SECRETARY,
    SHAPES,
    Sent,
    forwarded_inline,
    in_archive,
    outlook_tnef,
    with_placeholders,
    with_tracked_changes,
)
from parsers import Limits, read_document, read_message
from parsers.archive import read_archive
from parsers.errors import CannotRead
from parsers.model import FormReading, Submission, Unreadable
from parsers.spec import FormSpec
from tests.parsers.builders import EXPECTED, SMP_ROWS, W_NS, body_xml_form, docx_bytes, table_form

SAMPLES = Path(__file__).parent / "samples"
FORM = table_form(SMP_ROWS)
SENT = Sent(FORM, "申报表-张伟.docx", "张伟", "zhangwei@tsinghua.edu.cn", "min.gao@aminer.cn")


def form_of(submission: Submission) -> FormReading:
    assert submission.form is not None, (submission.unreadable, submission.attachments)
    return submission.form


def checked(reading: FormReading) -> dict[str, object]:
    """The values the test form's truth names."""
    return {name: reading.value(name) for name in EXPECTED}


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.name for shape in SHAPES])
def test_every_shape_reads_the_forms_own_fields(shape: object, smp_spec: FormSpec) -> None:
    from benchmarks.shapes import Shape

    assert isinstance(shape, Shape)
    submission = read_message(shape.build(SENT), smp_spec)
    assert submission.status == "form"
    assert checked(form_of(submission)) == EXPECTED
    assert [a.role for a in submission.attachments].count("form") == 1


# ---------------------------------------------------------------------------------------------- archives


def read_members(data: bytes, kind: str, limits: Limits | None = None) -> dict[str, bytes | Unreadable | None]:
    members = read_archive(data, f"a.{kind}", kind, limits or Limits())  # type: ignore[arg-type]
    return {member.name: member.data if member.data is not None else member.refused for member in members}


@pytest.mark.parametrize("kind", ["7z", "rar"])
def test_archive_containment_like_zip(kind: str) -> None:
    make = seven_zip if kind == "7z" else rar4_stored
    many = make({f"f{number}.txt": b"x" for number in range(300)})
    with pytest.raises(CannotRead) as refused:
        read_members(many, kind)
    assert refused.value.reason.reason == "archive-refused"
    big = make({"a.docx": b"a" * 200_000, "b.docx": b"b" * 200_000})
    with pytest.raises(CannotRead) as refused:
        read_members(big, kind, Limits(archive_max_total_bytes=300_000))
    assert refused.value.reason.reason == "archive-refused"
    unsafe = read_members(make({"..\\..\\etc\\passwd.docx": FORM, "C:\\Windows\\申报表.docx": FORM}), kind)
    assert sorted(unsafe) == ["passwd.docx", "申报表.docx"]
    assert all(data == FORM for data in unsafe.values())


def test_7z_bomb_and_password() -> None:
    bomb = seven_zip({"big.docx": b"\x00" * 60_000_000})
    with pytest.raises(CannotRead) as refused:
        read_members(bomb, "7z")
    assert refused.value.reason.reason == "archive-refused"
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password="secret") as archive:
        archive.writestr(FORM, "申报表.docx")
    with pytest.raises(CannotRead) as locked:
        read_members(buffer.getvalue(), "7z")
    assert locked.value.reason.reason == "encrypted"


def test_archives_nested_too_deeply_are_refused(smp_spec: FormSpec) -> None:
    innermost = seven_zip({"申报表.docx": FORM})
    nested = rar4_stored({"b.7z": rar4_stored({"a.7z": innermost})})
    reading = read_document(nested, "申报.rar", smp_spec, Limits(archive_max_depth=2))
    assert isinstance(reading, Unreadable) and reading.reason == "archive-refused"
    assert isinstance(read_document(rar4_stored({"a.7z": innermost}), "申报.rar", smp_spec), FormReading)


def test_public_rar_samples_of_both_versions() -> None:
    """libarchive's own test archives: RAR 4 (compressed, Unicode names), RAR 5, an encrypted RAR 4."""
    rar4 = read_members((SAMPLES / "libarchive__test_read_format_rar_unicode.rar").read_bytes(), "rar")
    assert [len(data) for data in rar4.values() if isinstance(data, bytes)] == [0, 5, 16]
    assert "漢字長いファイル名long-filename-in-漢字.txt" in rar4
    rar5 = read_members((SAMPLES / "libarchive__test_read_format_rar5_compressed.rar").read_bytes(), "rar")
    assert isinstance(rar5["test.bin"], bytes) and len(rar5["test.bin"]) == 1200
    locked = read_members((SAMPLES / "libarchive__test_read_format_rar4_encrypted.rar").read_bytes(), "rar")
    assert any(isinstance(value, Unreadable) and value.reason == "encrypted" for value in locked.values())


def test_rar_names_in_the_chinese_code_page_are_read() -> None:
    members = read_members(rar4_stored({"材料/申报表.docx": FORM}, oem_code_page="gbk"), "rar")
    assert list(members) == ["申报表.docx"]


def test_rar_without_libarchive_names_what_to_install(monkeypatch: pytest.MonkeyPatch, smp_spec: FormSpec) -> None:
    monkeypatch.setitem(sys.modules, "libarchive", None)  # import fails as where libarchive13 is absent
    reading = read_document(rar4_stored({"申报表.docx": FORM}), "申报.rar", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "unsupported-format"
    assert "libarchive13" in reading.detail and "libarchive-c" in reading.detail


def test_zip_flagged_utf8_over_gbk_names_reads_the_names(smp_spec: FormSpec) -> None:
    raw = in_archive("zip-utf8-gbk")(SENT)
    submission = read_message(raw, smp_spec)
    assert form_of(submission).attachment == "申报表-张伟.docx"
    assert [a.path[-1] for a in submission.attachments[1:]] == ["申报材料/申报表-张伟.docx", "申报材料/说明.txt"]
    members = read_members(zip_flagged_utf8_over_gbk({"材料/说明.txt": b"x"}), "zip")
    assert list(members) == ["说明.txt"]


# ---------------------------------------------------------------------------------------------- Outlook


def test_tnef_builder_is_what_tnefparse_reads() -> None:
    stream = tnef({"申报表.docx": FORM, "photo.jpg": b"\xff\xd8\xff" + b"0" * 50})
    parsed = tnefparse.TNEF(stream, do_checksum=True)
    assert all(item.good_checksum for item in parsed.objects)
    assert [bytes(item.data) for item in parsed.attachments] == [FORM, b"\xff\xd8\xff" + b"0" * 50]
    assert parsed.attachments[0]._name.rstrip(b"\x00").decode("gbk") == "申报表.docx"


def test_winmail_dat_gives_its_attachments_with_chinese_names(smp_spec: FormSpec) -> None:
    submission = read_message(outlook_tnef(SENT), smp_spec)
    assert [(a.filename, a.kind) for a in submission.attachments] == [
        ("winmail.dat", "tnef"),
        ("申报表-张伟.docx", "docx"),
    ]
    assert checked(form_of(submission)) == EXPECTED
    # a property list claiming 2**32-1 properties: tnefparse would walk them all, past the data
    damaged = tnef({"申报表.docx": FORM}) + struct.pack("<BII", 2, 0x0000_9005, 8) + b"\xff" * 8 + b"\x00\x00"
    broken = read_document(damaged, "winmail.dat", smp_spec)
    assert isinstance(broken, Unreadable) and broken.reason == "corrupt"


def test_an_attached_outlook_item_is_opened(shared_dir: Path, smp_spec: FormSpec) -> None:
    """SpamScope's Outlook item (five images, no form): its files are examined, nothing is a form."""
    item = (shared_dir / "hostile" / "eml" / "mailparser__mail_outlook_1.msg").read_bytes()
    raw = in_archive("7z")(replace(SENT, form=item, form_name="邮件.msg"))
    submission = read_message(raw, smp_spec)
    kinds = [a.kind for a in submission.attachments]
    assert "msg" in kinds and kinds.count("image") == 5
    assert submission.status == "no_form"


# ---------------------------------------------------------------------------------------------- forwards


def test_forwards_record_who_forwarded_and_who_wrote(smp_spec: FormSpec) -> None:
    for shape_name in ("forwarded-rfc822", "forwarded-inline", "forwarded-outlook-item"):
        shape = next(shape for shape in SHAPES if shape.name == shape_name)
        submission = read_message(shape.build(SENT), smp_spec)
        assert form_of(submission).value("applicant_name") == "张伟"
        assert (submission.forwarded_by, submission.forwarded_from) == (SECRETARY[1], SENT.from_addr), shape_name
    own = read_message(forwarded_inline(replace(SENT, from_addr=SECRETARY[1])), smp_spec)
    assert own.forwarded_by is None  # forwarding one's own mail is no forward for the record
    plain = read_message(SHAPES[0].build(SENT), smp_spec)
    assert plain.forwarded_by is None and plain.forwarded_from is None


# ---------------------------------------------------------------------------------------------- Word


def test_placeholders_are_blank_never_values(smp_spec: FormSpec) -> None:
    blank_rows = [row if row[0] != "手机" else ["手机", "", "电子邮箱", ""] for row in SMP_ROWS]
    reading = read_document(with_placeholders(table_form(blank_rows)), "申报表.docx", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.value("phone") is None and reading.value("email") is None
    assert reading.value("applicant_name") == "张伟"
    # Word's prompt typed as plain text (the control lost): still blank
    for prompt in (PLACEHOLDER_ZH, PLACEHOLDER_EN, "选择一项。", "单击此处输入文字。", "Choose an item."):
        rows = [row if row[0] != "所在单位" else ["所在单位", prompt] for row in SMP_ROWS]
        typed = read_document(table_form(rows), "申报表.docx", smp_spec)
        assert isinstance(typed, FormReading) and typed.value("institution") is None, prompt


def test_a_block_placeholder_is_not_recovered_as_text(smp_spec: FormSpec) -> None:
    control = (
        f"<w:sdt {W_NS}><w:sdtPr><w:showingPlcHdr/></w:sdtPr><w:sdtContent>"
        + "".join(f"<w:p><w:r><w:t>项目名称：{PLACEHOLDER_ZH}{n}</w:t></w:r></w:p>" for n in range(8))
        + "</w:sdtContent></w:sdt>"
    )
    data = body_xml_form([control], before=["申请人姓名：张伟", "所在单位：清华大学", "申报课题：3.2"])
    reading = read_document(data, "申报表.docx", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.value("project_title") is None


def test_tracked_changes_read_as_accepted(smp_spec: FormSpec) -> None:
    reading = read_document(with_tracked_changes(FORM), "申报表.docx", smp_spec)
    assert isinstance(reading, FormReading)
    assert checked(reading) == EXPECTED  # deleted row's name, w:delText and w:moveFrom all dropped
    moved = (
        f"<w:p {W_NS}><w:r><w:t>项目名称：</w:t></w:r>"
        "<w:moveFrom w:id='1' w:author='a'><w:r><w:t>旧题目</w:t></w:r></w:moveFrom>"
        "<w:moveTo w:id='2' w:author='a'><w:r><w:t>新题目研究</w:t></w:r></w:moveTo></w:p>"
    )
    cell_deleted = (
        f"<w:tbl {W_NS}><w:tr><w:tc><w:p><w:r><w:t>所在单位</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:tcPr><w:cellDel w:id='3' w:author='a'/></w:tcPr><w:p><w:r><w:t>北京大学</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>清华大学</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
    )
    data = body_xml_form([moved, cell_deleted], before=["申请人姓名：张伟", "申报课题：3.2"])
    reading = read_document(data, "申报表.docx", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.value("project_title") == "新题目研究"
    assert reading.value("institution") == "清华大学"


def test_fields_in_headers_frames_and_text_boxes_are_read(smp_spec: FormSpec) -> None:
    import docx

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "项目名称：页眉里的项目研究"
    framed = document.add_paragraph("申请人姓名：孙八")
    properties = framed._p.get_or_add_pPr()
    from docx.oxml import parse_xml

    properties.append(parse_xml(f'<w:framePr {W_NS} w:w="3000" w:h="600" w:hAnchor="page" w:vAnchor="page"/>'))
    document.add_paragraph("所在单位：南京大学")
    document.add_paragraph("申报课题：7.1")
    reading = read_document(docx_bytes(document), "申报表.docx", smp_spec)
    assert isinstance(reading, FormReading)
    assert reading.value("project_title") == "页眉里的项目研究"
    assert reading.value("applicant_name") == "孙八"


# ---------------------------------------------------------------------------------------------- file types


def test_a_scanned_signed_copy_stays_an_attachment_of_the_application(smp_spec: FormSpec) -> None:
    shape = next(shape for shape in SHAPES if shape.name == "with-signed-scan")
    submission = read_message(shape.build(SENT), smp_spec)
    assert submission.status == "form" and submission.unreadable is None
    scan = submission.attachments[1]
    assert (scan.kind, scan.role) == ("pdf", "document") and scan.note.startswith("scanned")
    assert any("scanned" in line for line in submission.diagnostics)


# ---------------------------------------------------------------------------------------------- sandbox


@pytest.mark.timeout(300)
def test_public_samples_end_in_fields_or_a_reason_in_the_worker_pool(shared_dir: Path, smp_spec: FormSpec) -> None:
    from benchmarks.extraction import message_around
    from parsers.sandbox import ParserPool

    files = sorted(path for path in SAMPLES.iterdir() if path.is_file() and path.suffix != ".md")
    files.append(shared_dir / "hostile" / "eml" / "mailparser__mail_outlook_1.msg")
    with ParserPool(2, timeout_s=30, memory_mb=1024) as pool:
        jobs = [(path.name, pool.submit(message_around(path), smp_spec)) for path in files]
        results = {name: job.result(timeout=120) for name, job in jobs}
    contained = {
        name: s.unreadable for name, s in results.items() if s.unreadable and s.unreadable.attachment == "(message)"
    }
    assert not contained, contained  # no timeout, memory overrun or crashed worker
    reasons = {name: s.unreadable.reason if s.unreadable else s.status for name, s in results.items()}
    assert reasons["libarchive__test_read_format_7zip_encryption.7z"] == "encrypted"
    assert reasons["libarchive__test_read_format_7zip_malformed.7z"] == "corrupt"
    assert reasons["libarchive__test_read_format_rar5_compressed.rar"] == "no_form"
    bcj2 = results["libarchive__test_read_format_7zip_bcj2_copy_1.7z"].attachments
    assert [a.filename for a in bcj2] == ["libarchive__test_read_format_7zip_bcj2_copy_1.7z", "x86exe"]
    two = results["tnefparse__two-files.tnef"].attachments
    assert two[0].kind == "tnef" and len(two) == 3 and all(a.size > 0 for a in two)
    outlook = results["mailparser__mail_outlook_1.msg"].attachments
    assert outlook[0].kind == "msg" and [a.kind for a in outlook[1:]] == ["image"] * 5


def test_rar_names_survive_a_c_locale() -> None:
    """A service started with LC_ALL=C: libarchive would give the names out in ASCII, i.e. lose them."""
    import os
    import subprocess

    script = (
        "import sys; from parsers.archive import read_archive; from parsers.limits import Limits; "
        "data = open(sys.argv[1], 'rb').read(); "
        "print('|'.join(m.stored_name for m in read_archive(data, 'a.rar', 'rar', Limits())))"
    )
    sample = SAMPLES / "libarchive__test_read_format_rar_unicode.rar"
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "-c", script, str(sample)], env=env, capture_output=True, check=True)
    assert "表だよ/漢字長いファイル名long-filename-in-漢字.txt" in done.stdout.decode("utf-8").split("|")


def test_the_forms_own_text_beats_ocr_of_its_scanned_copy(smp_spec: FormSpec) -> None:
    """With an OCR engine installed the signed scan is read too; it must not win over the form."""
    from parsers.documents import Examined, best_reading
    from parsers.model import Attachment

    text = read_document(FORM, "申报表.docx", smp_spec)
    assert isinstance(text, FormReading)
    ocr = replace(text, attachment="签字扫描.pdf", score=min(1.0, text.score + 0.1))
    scan = Attachment("签字扫描.pdf", "application/pdf", "pdf", 1, "", ("2",), "document")
    form = Attachment("申报表.docx", "", "docx", 1, "", ("3",), "document")
    ocr_note = ("签字扫描.pdf: no text layer; read by OCR (rapidocr)",)
    chosen, others, _ = best_reading([Examined(scan, ocr, ocr_note), Examined(form, text)])
    assert chosen is text and others == (ocr,)


@pytest.mark.timeout(240)
def test_damaged_archives_and_winmail_end_in_an_outcome_quickly(smp_spec: FormSpec) -> None:
    """Seeded byte flips and cuts of every container the new readers open, read in this process:
    no hang (a damaged count walked to its end), no crash, each in well under a second."""
    import random
    import time

    seeds = [rar4_stored({"a.docx": FORM}), seven_zip({"a.docx": FORM}), tnef({"a.docx": FORM})]
    seeds += [path.read_bytes() for path in SAMPLES.iterdir() if path.suffix in (".rar", ".7z", ".tnef")]
    rng = random.Random(19)
    slowest = 0.0
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        started = time.perf_counter()
        reading = read_document(bytes(data), "x", smp_spec)
        slowest = max(slowest, time.perf_counter() - started)
        assert reading is None or isinstance(reading, FormReading | Unreadable)
    assert slowest < 5
