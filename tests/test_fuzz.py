"""Property-based fuzzing of the MIME walker and the form readers: whatever bytes arrive, reading
ends in an outcome.

Properties: ``parsers.read_message`` never raises and ends in a Submission whose status is form,
no_form or unreadable, whose reason (if any) is one of ``UNREADABLE_REASONS``, whose attachment
names are safe to show and save, which stores as JSON, and which no unexpected exception reached
(the catch-all's "reading the message failed" diagnostic); ``parsers.read_document`` ends in a
FormReading, an Unreadable with a known reason, or None.

Inputs: messages built from random headers (CR/LF, NUL, 8-bit bytes, encoded words, RFC 2231
parameters), random multipart trees, random Content-Transfer-Encodings and charsets, truncated;
Word packages with random or garbled ``word/document.xml`` (random nesting of the elements forms
use, random table shapes and merge attributes) and damaged package parts; byte flips, cuts and
insertions in a small PDF written here (and in one LibreOffice makes, when installed); random
bytes behind document signatures. Legacy formats are not converted here (a stub refuses them):
LibreOffice is slow and is exercised by the parser tests.

Runs: by default a bounded, derandomised run (the same inputs every time, about half a minute).
A longer, random run on demand::

    MAILBOT_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/test_fuzz.py -p no:cacheprovider \\
        --hypothesis-show-statistics

``MAILBOT_FUZZ_EXAMPLES`` is the number of examples per test. Any input that breaks a property
is saved under ``tests/fixtures/fuzz/`` (after shrinking, by hand from the failure report) and
replayed by ``test_regression_inputs``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import quopri
import time
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]

import parsers.documents
from mailbot.config import load_settings
from mailbot.review import ReviewQueue
from parsers import read_document, read_message
from parsers.errors import CannotRead
from parsers.model import UNREADABLE_REASONS, FormReading, Submission, Unreadable, to_jsonable
from storage.models import Message
from tests.parsers.builders import SMP_ROWS, office_binary, table_form, to_pdf

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fuzz"
SPEC = load_settings(REPO / "config.example.toml").call[0].form_spec
ON_DEMAND = int(os.environ.get("MAILBOT_FUZZ_EXAMPLES", "0"))


def budget(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, the same each run, unless a longer run is asked for."""
    return settings(
        max_examples=ON_DEMAND or default,
        deadline=None,
        derandomize=not ON_DEMAND,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


TRIED: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def no_conversion_and_a_tally(request: pytest.FixtureRequest) -> Iterator[None]:
    """Legacy formats refused without starting LibreOffice; how many inputs were tried, said at the end."""

    def refuse(data: bytes, source_extension: str, target: str, filename: str, timeout_s: float) -> bytes:
        raise CannotRead(Unreadable("unsupported-format", filename, "not converted while fuzzing"))

    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parsers.documents, "convert", refuse)
        patch.setattr(parsers.documents, "ocr_engine", lambda: None)
        yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
        outcomes = ", ".join(f"{name} {count}" for name, count in OUTCOMES.most_common())
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"fuzz: {sum(TRIED.values())} inputs in {time.monotonic() - started:.1f} s ({counts})")
            reporter.write_line(f"fuzz outcomes: {outcomes}")


# --- the properties -------------------------------------------------------------------------------

ROLES = {"form", "document", "other", "refused"}


def is_safe_name(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and all(unicodedata.category(char) not in ("Cc", "Cf", "Cs") or char == "\u200d" for char in name)
    )


def check_submission(submission: Submission) -> None:
    assert isinstance(submission, Submission)
    assert submission.status in ("form", "no_form", "unreadable")
    if submission.unreadable is not None:
        assert submission.unreadable.reason in UNREADABLE_REASONS, submission.unreadable
    for attachment in submission.attachments:
        assert is_safe_name(attachment.filename), repr(attachment.filename)
        assert attachment.role in ROLES
    envelope = submission.envelope
    for text in (envelope.subject, envelope.from_name, envelope.from_addr, *envelope.headers.values()):
        assert not any(char in text for char in "\r\n\x00\x1b"), repr(text)
    unexpected = [line for line in submission.diagnostics if line.startswith("reading the message failed")]
    assert not unexpected, unexpected
    json.dumps(to_jsonable(submission), ensure_ascii=False)


def check_reading(reading: object) -> None:
    assert reading is None or isinstance(reading, FormReading | Unreadable), reading
    if isinstance(reading, Unreadable):
        assert reading.reason in UNREADABLE_REASONS, reading
        assert not reading.detail.startswith("unexpected failure"), reading
    if isinstance(reading, FormReading):
        json.dumps(to_jsonable(reading), ensure_ascii=False)


def read_and_check_message(raw: bytes, kind: str) -> Submission:
    TRIED[kind] += 1
    submission = read_message(raw, SPEC)
    check_submission(submission)
    OUTCOMES[submission.unreadable.reason if submission.unreadable else submission.status] += 1
    return submission


def read_and_check_document(data: bytes, filename: str, kind: str) -> None:
    TRIED[kind] += 1
    reading = read_document(data, filename, SPEC)
    check_reading(reading)
    OUTCOMES[reading.reason if isinstance(reading, Unreadable) else "form" if reading else "no_form"] += 1


# --- seeds ----------------------------------------------------------------------------------------

FORM_DOCX = table_form(SMP_ROWS)
PDF_ROWS = [
    ("Project Title", "Large models for essay grading"),
    ("Applicant", "Zhang Wei"),
    ("Institution", "Tsinghua University"),
    ("Email", "zhangwei@tsinghua.edu.cn"),
    ("Phone", "13812345678"),
    ("Topic", "3.2"),
    ("Budget", "20"),
]


def form_pdf_objects(rows: list[tuple[str, str]]) -> list[bytes]:
    """A two-page PDF's objects: a ruled table of label/value rows (a form pdfplumber lays out), then prose."""
    top, height, left, middle, right = 760, 24, 60, 220, 540
    ops = ["0.5 w"]
    ops += [f"{left} {top - number * height} m {right} {top - number * height} l S" for number in range(len(rows) + 1)]
    bottom = top - len(rows) * height
    ops += [f"{x} {top} m {x} {bottom} l S" for x in (left, middle, right)]
    for number, (label, value) in enumerate(rows):
        y = top - (number + 1) * height + 8
        for x, text in ((left + 4, label), (middle + 4, value)):
            escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"BT /F1 10 Tf {x} {y} Td ({escaped}) Tj ET")
    table = "\n".join(ops).encode("latin-1")
    prose = zlib.compress(b"BT /F1 12 Tf 72 720 Td (Research plan: the proposal body follows the form.) Tj ET")
    resources = b"/Resources << /Font << /F1 5 0 R >> >>"
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] " + resources + b" /Contents 6 0 R >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] " + resources + b" /Contents 7 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(table) + table + b"\nendstream",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(prose) + prose + b"\nendstream",
    ]


def pdf_file(objects: list[bytes]) -> bytes:
    """The objects numbered from 1, with a correct cross-reference table (object 1 is the catalog)."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


FORM_PDF = pdf_file(form_pdf_objects(PDF_ROWS))


def test_seeds_are_read_as_forms() -> None:
    """The fuzzers mutate inputs that reach the deep paths: both seeds are whole, readable forms."""
    for data, name in ((FORM_DOCX, "form.docx"), (FORM_PDF, "form.pdf")):
        reading = read_document(data, name, SPEC)
        assert isinstance(reading, FormReading) and reading.value("project_title"), reading


# --- messages -------------------------------------------------------------------------------------

HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Date",
    "Return-Path",
    "Received",
    "MIME-Version",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "X-Mailer",
]
# pieces that mean something to a header parser, so random values hit its branches
HEADER_PIECES = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n ",
    b"\x00",
    b"\x1b[31m",
    b"\xff\xfe",
    b"\xe7\x94\xb3",
    b"\xb2\xe2",
    b"=?utf-8?B?",
    b"=?gb2312?Q?",
    b"=?x-unknown?b?",
    b"=?",
    b"=?utf-8\x00?B?",
    b"?=",
    b"5byg5Lyf",
    b"=E4=BC=9F",
    b"<",
    b">",
    b"@",
    b",",
    b";",
    b'"',
    b"'",
    b"\\",
    b"(",
    b")",
    b"*0*=",
    b"utf-8''%E7%94%B3",
    b"filename=",
    b"name*=",
    b"boundary=",
    b"charset=",
    b"multipart/mixed",
    b"text/html",
    b"message/rfc822",
    b"zhangwei@tsinghua.edu.cn",
    b"Sat, 07 Sep 2024 10:00:00 +0800",
    b"Mon, 99 Foo 0 25:61:61 +9999",
    b" ",
    b"\t",
]
CHARSETS = [
    "utf-8",
    "gb2312",
    "gbk",
    "gb18030",
    "big5",
    "iso-2022-jp",
    "utf-7",
    "utf-16",
    "ks_c_5601-1987",
    "x-bogus",
    "utf-8\x00",
    "gb\u00e92312",
    "",
]


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    """An RFC 2047 encoded word of random bytes in a charset that may not exist."""
    charset = draw(st.one_of(st.sampled_from(CHARSETS), st.text(max_size=8))).encode("utf-8", "surrogatepass")
    payload = draw(st.binary(max_size=24))
    if draw(st.booleans()):
        return b"=?" + charset + b"?B?" + base64.b64encode(payload) + b"?="
    return b"=?" + charset + b"?Q?" + quopri.encodestring(payload, header=True).replace(b"=\n", b"") + b"?="


header_value = st.lists(
    st.one_of(st.sampled_from(HEADER_PIECES), st.binary(max_size=12), encoded_word()), max_size=10
).map(b"".join)
header = st.tuples(
    st.one_of(
        st.sampled_from([name.encode() for name in HEADER_NAMES]), st.from_regex(rb"[!-9;-~]{1,12}", fullmatch=True)
    ),
    header_value,
)

ENCODINGS = ["base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode", "bogus", ""]
LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/pdf",
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/octet-stream",
    "application/msword",
    "message/rfc822",
    "message/delivery-status",
    "text/rfc822-headers",
    "image/png",
    "multipart/mixed",
    "garbage",
    "",
]
NAMES = ["申请表.docx", "form.pdf", "../../etc/passwd", "a\x00b.pdf", "\x1b[31m.pdf", "材料.zip", "", ".", "x" * 300]


def _zip_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


PAYLOADS = [
    FORM_DOCX,
    FORM_PDF,
    _zip_of("申请表.docx", FORM_DOCX),
    "<html><body><p>申请表见附件</p><script>x</script></body></html>".encode(),
    "申请表见附件".encode("gb18030"),
    b"From: a@b.c\r\nSubject: inner\r\n\r\nbody",
]


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    data = draw(st.one_of(st.sampled_from(PAYLOADS), st.binary(max_size=300)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def encoded_body(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "base64":
        body = base64.encodebytes(data)
        if draw(st.booleans()):  # damaged base64: a cut, stray characters
            body = body[: draw(st.integers(0, len(body)))] + draw(st.sampled_from([b"", b"!!", b"=", b"\xff"]))
    elif encoding == "quoted-printable":
        body = quopri.encodestring(data) + draw(st.sampled_from([b"", b"=", b"=Z", b"=\r\n"]))
    else:
        body = data
    return encoding, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@st.composite
def leaf_part(draw: st.DrawFn) -> bytes:
    content_type = draw(st.sampled_from(LEAF_TYPES))
    params = ""
    if draw(st.booleans()):
        params += f'; charset="{draw(st.sampled_from(CHARSETS))}"'
    name = draw(st.sampled_from(NAMES))
    head = f"Content-Type: {content_type}{params}".encode()
    if draw(st.booleans()):
        quoted = "".join(f"%{byte:02X}" for byte in name.encode())
        head += b"\r\nContent-Disposition: " + draw(
            st.sampled_from(
                [
                    b"attachment; filename*=UTF-8''" + quoted.encode(),
                    b'inline; filename="' + name.encode() + b'"',
                    b"attachment",
                ]
            )
        )
    encoding, body = draw(encoded_body(draw(payloads())))
    if encoding:
        head += f"\r\nContent-Transfer-Encoding: {encoding}".encode()
    extra = draw(st.lists(header, max_size=2))
    head += b"".join(b"\r\n" + key + b": " + value for key, value in extra)
    return head + b"\r\n\r\n" + body


def multipart(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        boundary = draw(st.sampled_from([b"b1", b"=_Part_0", b"--", b"a b", b"", b"b1\x00", b"\xe7\x94\xb3"]))
        subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report", b"digest", b"signed"]))
        parts = draw(st.lists(children, min_size=0, max_size=4))
        body = draw(st.sampled_from([b"", b"preamble\r\n", b"--" + boundary + b"--\r\n"]))
        for part in parts:
            body += b"--" + boundary + b"\r\n" + part + b"\r\n"
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\r\n" + draw(st.sampled_from([b"", b"epilogue"]))
        head = b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"'
        if subtype == b"report":
            head += b"; report-type=delivery-status"
        return head + b"\r\n\r\n" + body

    return build()


def enclosed(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return children.map(lambda inner: b"Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n" + inner)


mime_tree = st.recursive(leaf_part(), lambda children: st.one_of(multipart(children), enclosed(children)), max_leaves=8)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(header, max_size=8))
    raw = b"".join(key + b": " + value + b"\r\n" for key, value in headers)
    raw = b"From: =?UTF-8?B?5byg5Lyf?= <zhangwei@tsinghua.edu.cn>\r\nMIME-Version: 1.0\r\n" + raw + draw(mime_tree)
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@budget(250)
@given(messages())
def test_random_messages_end_in_an_outcome(raw: bytes) -> None:
    read_and_check_message(raw, "messages")


# --- Word packages --------------------------------------------------------------------------------

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
TAGS = [
    "p",
    "r",
    "t",
    "tbl",
    "tr",
    "tc",
    "tcPr",
    "trPr",
    "gridSpan",
    "gridBefore",
    "vMerge",
    "sdt",
    "sdtContent",
    "txbxContent",
    "br",
    "tab",
    "checkBox",
    "checked",
    "customXml",
    "ins",
    "del",
    "delText",
    "hyperlink",
    "smartTag",
    "pPr",
    "rPr",
    "noBreakHyphen",
]
VALUES = ["", "0", "1", "-1", "3", "restart", "continue", "true", "99999999999999999999", "abc", "2.5"]
WORDS = [label for field in SPEC.fields for label in field.labels] + [value for row in SMP_ROWS for value in row]
text = st.one_of(
    st.sampled_from(WORDS),
    st.text(st.characters(blacklist_categories=["Cs", "Cc", "Cn"]), max_size=20),
    st.sampled_from(["\t", " ", "：", "☑", "☐", "\u2028", "\u200b", "\ufeff"]),
)


@st.composite
def element(draw: st.DrawFn, children: st.SearchStrategy[list[etree._Element]]) -> etree._Element:
    tag = draw(st.sampled_from([*TAGS, "mc:AlternateContent", "mc:Choice", "mc:Fallback"]))
    namespace = MC if tag.startswith("mc:") else W
    node = etree.Element(f"{{{namespace}}}{tag.removeprefix('mc:')}", nsmap={"w": W, "mc": MC})
    if draw(st.booleans()):
        node.set(f"{{{W}}}val", draw(st.sampled_from(VALUES)))
    if tag in ("t", "delText") or draw(st.integers(0, 4)) == 0:
        node.text = draw(text)
    for child in draw(children):
        node.append(child)
    return node


xml_tree = st.recursive(element(st.just([])), lambda inner: element(st.lists(inner, max_size=4)), max_leaves=30)


def document_xml(body_children: list[etree._Element]) -> bytes:
    document = etree.Element(f"{{{W}}}document", nsmap={"w": W, "mc": MC})
    body = etree.SubElement(document, f"{{{W}}}body")
    for child in body_children:
        body.append(child)
    return bytes(etree.tostring(document, xml_declaration=True, encoding="UTF-8", standalone=True))


@st.composite
def table_xml(draw: st.DrawFn) -> etree._Element:
    """A table of random shape: ragged rows, random spans and vertical merges, labels and values."""
    table = etree.Element(f"{{{W}}}tbl", nsmap={"w": W})
    for _ in range(draw(st.integers(0, 12))):
        row = etree.SubElement(table, f"{{{W}}}tr")
        if draw(st.integers(0, 5)) == 0:
            before = etree.SubElement(etree.SubElement(row, f"{{{W}}}trPr"), f"{{{W}}}gridBefore")
            before.set(f"{{{W}}}val", draw(st.sampled_from(VALUES)))
        for _ in range(draw(st.integers(0, 7))):
            cell = etree.SubElement(row, f"{{{W}}}tc")
            properties = etree.SubElement(cell, f"{{{W}}}tcPr")
            if draw(st.booleans()):
                etree.SubElement(properties, f"{{{W}}}gridSpan").set(f"{{{W}}}val", draw(st.sampled_from(VALUES)))
            if draw(st.integers(0, 3)) == 0:
                merge = etree.SubElement(properties, f"{{{W}}}vMerge")
                if draw(st.booleans()):
                    merge.set(f"{{{W}}}val", draw(st.sampled_from(["restart", "continue", "x"])))
            for line in draw(st.lists(text, max_size=2)):
                run = etree.SubElement(etree.SubElement(cell, f"{{{W}}}p"), f"{{{W}}}r")
                etree.SubElement(run, f"{{{W}}}t").text = line
            if draw(st.integers(0, 8)) == 0:
                cell.append(draw(st.deferred(lambda: table_xml())))
    return table


FORM_PARTS = {
    info.filename: zipfile.ZipFile(io.BytesIO(FORM_DOCX)).read(info)
    for info in zipfile.ZipFile(io.BytesIO(FORM_DOCX)).infolist()
}


def package(replaced: dict[str, bytes | None]) -> bytes:
    """The seed form's package with parts replaced (None: removed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in {**FORM_PARTS, **replaced}.items():
            if data is not None:
                target.writestr(name, data)
    return out.getvalue()


@st.composite
def garbled(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, cut or inserted."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buffer:
            break
        at = draw(st.integers(0, len(buffer) - 1))
        operation = draw(st.sampled_from(["flip", "cut", "insert", "delete", "repeat"]))
        if operation == "flip":
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "cut":
            del buffer[at:]
        elif operation == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del buffer[at : at + draw(st.integers(1, 64))]
        else:
            buffer[at:at] = buffer[at : at + draw(st.integers(1, 64))]
    return bytes(buffer)


@st.composite
def word_packages(draw: st.DrawFn) -> bytes:
    children = draw(st.lists(st.one_of(xml_tree, table_xml()), max_size=6))
    document = document_xml(children)
    if draw(st.integers(0, 4)) == 0:
        document = draw(garbled(document))
    replaced: dict[str, bytes | None] = {"word/document.xml": document}
    damaged = draw(
        st.sampled_from(["", "[Content_Types].xml", "_rels/.rels", "word/_rels/document.xml.rels", "word/styles.xml"])
    )
    if damaged:
        replaced[damaged] = draw(
            st.one_of(st.none(), st.sampled_from([b"", b"<x/>", b"\xff\xfe<"]), garbled(FORM_PARTS[damaged]))
        )
    return package(replaced)


@budget(200)
@given(word_packages())
def test_random_word_documents_end_in_an_outcome(data: bytes) -> None:
    read_and_check_document(data, "申请表.docx", "word packages")


@budget(60)
@given(word_packages())
def test_random_word_documents_in_mail_end_in_an_outcome(data: bytes) -> None:
    quoted = "%E7%94%B3%E8%AF%B7%E8%A1%A8.docx"
    raw = (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''"
        + quoted.encode()
        + b"\r\n\r\n"
        + base64.encodebytes(data)
        + b"\r\n--b--\r\n"
    )
    read_and_check_message(raw, "word packages in mail")


@budget(120)
@given(garbled(FORM_DOCX))
def test_damaged_word_packages_end_in_an_outcome(data: bytes) -> None:
    read_and_check_document(data, "申请表.docx", "damaged packages")


# --- PDFs -----------------------------------------------------------------------------------------


LABELS = [label for field in SPEC.fields for label in field.labels if label.isascii()]
latin1 = st.text(st.characters(max_codepoint=255, blacklist_categories=["Cs"]), max_size=30)


@st.composite
def pdfs(draw: st.DrawFn) -> bytes:
    """The form PDF with random rows, some objects garbled (the cross-reference table kept right),
    and now and then the whole file damaged."""
    rows = draw(
        st.one_of(
            st.just(PDF_ROWS), st.lists(st.tuples(st.one_of(st.sampled_from(LABELS), latin1), latin1), max_size=12)
        )
    )
    objects = form_pdf_objects(rows)
    for _ in range(draw(st.integers(0, 2))):
        number = draw(st.integers(0, len(objects) - 1))
        objects[number] = draw(garbled(objects[number]))
    data = pdf_file(objects)
    return draw(garbled(data)) if draw(st.integers(0, 3)) == 0 else data


@budget(150)
@given(pdfs())
def test_damaged_pdfs_end_in_an_outcome(data: bytes) -> None:
    read_and_check_document(data, "申请表.pdf", "PDFs")


@budget(100)
@given(garbled(FORM_PDF))
def test_pdfs_damaged_anywhere_end_in_an_outcome(data: bytes) -> None:
    read_and_check_document(data, "申请表.pdf", "PDFs damaged anywhere")


@pytest.fixture(scope="module")
def office_pdf() -> bytes:
    if office_binary() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    return to_pdf(FORM_DOCX)


@budget(60)
@given(data=st.data())
def test_damaged_office_pdfs_end_in_an_outcome(office_pdf: bytes, data: st.DataObject) -> None:
    read_and_check_document(data.draw(garbled(office_pdf)), "申请表.pdf", "damaged LibreOffice PDFs")


# --- anything at all ------------------------------------------------------------------------------

SIGNATURES = [
    b"",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"%PDF-1.7\n",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"{\\rtf1",
    b"Rar!\x1a\x07\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"\x89PNG\r\n\x1a\n",
    b"<html>",
]
FILE_NAMES = [
    "申请表.docx",
    "form.pdf",
    "材料.zip",
    "form.doc",
    "form.wps",
    "form.rtf",
    "a.odt",
    "scan.jpg",
    "notes.txt",
    "x",
    "",
]


@budget(300)
@given(st.sampled_from(SIGNATURES), st.binary(max_size=2048), st.sampled_from(FILE_NAMES))
def test_random_bytes_end_in_an_outcome(signature: bytes, tail: bytes, filename: str) -> None:
    read_and_check_document(signature + tail, filename, "random bytes")


@budget(150)
@given(st.binary(max_size=4096))
def test_random_bytes_as_a_message_end_in_an_outcome(raw: bytes) -> None:
    read_and_check_message(raw, "random messages")


# --- regression inputs ----------------------------------------------------------------------------


def stub_message(raw: bytes) -> Message:
    now = datetime.now(UTC)
    return Message(
        message_key="<fuzz@example.org>",
        message_id="<fuzz@example.org>",
        sha256="cd" * 32,
        size=len(raw),
        mailbox="smp",
        call_id="smp-zhipu-2024",
        arrival=now,
        recorded_at=now,
        source="imap",
        subject="regression",
        from_addr="a@example.org",
        reference=None,
        reason="corrupt",
        attempts=0,
    )


REGRESSIONS = sorted(path for path in FIXTURES.iterdir() if path.suffix not in (".json", ".md"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[path.name for path in REGRESSIONS])
def test_regression_inputs(path: Path, tmp_path: Path) -> None:
    """Each input that once broke a property: it ends in an outcome, and a message can be queued."""
    data = path.read_bytes()
    if path.suffix != ".eml":
        read_and_check_document(data, path.name, "regressions")
        return
    submission = read_and_check_message(data, "regressions")
    expected = path.with_suffix(".json")
    folder = ReviewQueue(tmp_path / "queue").add(stub_message(data), data, "unreadable", "regression")
    assert all(file.resolve().is_relative_to(folder.resolve()) for file in folder.rglob("*"))
    if expected.exists():
        want = json.loads(expected.read_text(encoding="utf-8"))
        assert submission.status == want["status"]
        if "reason" in want:
            assert submission.unreadable is not None and submission.unreadable.reason == want["reason"]
