"""Whole messages: decoded envelopes, every way of naming and wrapping an attachment, archives."""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import UTC, datetime

from parsers import Limits, extract_parts, read_message
from parsers.spec import FormSpec
from tests.parsers.builders import DOCX_TYPE, SMP_ROWS, message, mime_part, paragraph_form, table_form, text_part

FORM = table_form(SMP_ROWS)


def encoded_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def gbk_base64(text: str) -> str:
    return base64.b64encode(text.encode("gbk")).decode()


def attachment(data: bytes, disposition: bytes, content_type: str = DOCX_TYPE) -> bytes:
    return mime_part(data, content_type, disposition)


def test_envelope_headers_are_decoded(smp_spec: FormSpec) -> None:
    raw = message(
        [text_part("您好，附件为申报表。")],
        {
            "From": f"{encoded_word('张伟', 'utf-8')} <ZhangWei@Tsinghua.edu.cn>".encode(),
            "To": b"min.gao@aminer.cn, =?gbk?B?uN/D9A==?= <other@example.org>",
            "Cc": b"ant-ur@service.alipay.com",
            "Subject": (
                encoded_word("申报表（修改版）", "gb2312") + " =?gb2312?B?" + gbk_base64("镕基") + "?="
            ).encode(),
            "Message-ID": b" <abc.1@mail.example.org> ",
            "In-Reply-To": b"<ack.SMP24-0001@aminer.cn>",
            "References": b"<a@x> <b@y>\r\n <ack.SMP24-0001@aminer.cn>",
            "Return-Path": b"<>",
            "Received": b"from mx by mail; Sat, 07 Sep 2024 10:00:05 +0800",
            "X-Received": b"ignored",
            "Auto-Submitted": b"auto-replied",
            "X-Auto-Response-Suppress": b"All",
            "List-Id": b"<news.example.org>",
            "Precedence": b"bulk",
        },
    )
    raw = raw.replace(
        b"Received: from mx", b"Received: from a by b; Sat, 07 Sep 2024 10:00:09 +0800\r\nReceived: from mx"
    )
    envelope = read_message(raw, smp_spec).envelope
    assert envelope.from_addr == "zhangwei@tsinghua.edu.cn"
    assert envelope.from_name == "张伟"
    assert envelope.to == ("min.gao@aminer.cn", "other@example.org")
    assert envelope.cc == ("ant-ur@service.alipay.com",)
    assert envelope.subject == "申报表（修改版）镕基"  # GBK characters under a GB2312 label
    assert envelope.message_id == "<abc.1@mail.example.org>"
    assert envelope.in_reply_to == ("<ack.SMP24-0001@aminer.cn>",)
    assert envelope.references == ("<a@x>", "<b@y>", "<ack.SMP24-0001@aminer.cn>")
    assert envelope.return_path == ""
    assert envelope.received_times[0] == datetime(2024, 9, 7, 2, 0, 9, tzinfo=UTC)
    assert all(stamp.tzinfo is not None for stamp in envelope.received_times)
    assert envelope.date is not None and envelope.date.utcoffset() is not None
    assert envelope.headers["auto-submitted"] == "auto-replied"
    assert envelope.headers["x-auto-response-suppress"] == "All"
    assert envelope.headers["list-id"] == "<news.example.org>"
    assert envelope.headers["precedence"] == "bulk"
    assert envelope.content_type == "multipart/mixed"


def test_charsets_declared_wrongly_or_not_at_all(smp_spec: FormSpec) -> None:
    utf8_labelled_gb2312 = "=?gb2312?B?" + base64.b64encode("申报表".encode()).decode() + "?="
    split_word = "=?utf-8?B?" + base64.b64encode("申报".encode()[:4]).decode() + "?= =?utf-8?B?"
    split_word += base64.b64encode("申报".encode()[4:]).decode() + "?="
    cases = {
        utf8_labelled_gb2312.encode(): "申报表",
        encoded_word("國科會計畫", "big5").encode(): "國科會計畫",
        "申报表 raw".encode("gbk"): "申报表 raw",
        "申报表 raw".encode(): "申报表 raw",
        split_word.encode(): "申报",
        # undeclared Latin-1 / Windows-1252 from an old Western client; GBK around a rare character
        "Prof. Müller, Café".encode("latin-1"): "Prof. Müller, Café",
        "Réponse – José".encode("cp1252"): "Réponse – José",
        "朱镕基 raw".encode("gbk"): "朱镕基 raw",
    }
    for header, expected in cases.items():
        envelope = read_message(message([text_part("x")], {"Subject": header}), smp_spec).envelope
        assert envelope.subject == expected


def test_body_prefers_plain_text_and_converts_html(smp_spec: FormSpec) -> None:
    alternative = message(
        [text_part("纯文本正文", "gb18030"), text_part("<p>网页<b>正文</b></p>", subtype="html")], subtype="alternative"
    )
    assert read_message(alternative, smp_spec).envelope.body_text.strip() == "纯文本正文"
    html_only = message([text_part("<html><style>p{}</style><p>第一段</p><p>第二&amp;段</p></html>", subtype="html")])
    assert read_message(html_only, smp_spec).envelope.body_text == "第一段\n\n第二&段"
    long_body = message([text_part("字" * 50_000)])
    assert len(read_message(long_body, smp_spec).envelope.body_text) == Limits().body_text_chars


def test_bounce_names_the_bounced_message(smp_spec: FormSpec) -> None:
    enclosed = b"Message-ID: <ack.SMP24-0011@aminer.cn>\r\nSubject: x\r\n\r\nbody\r\n"
    report = message(
        [
            text_part("This is the mail system at host mx."),
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\nAction: failed\r\n",
            b"Content-Type: message/rfc822\r\n\r\n" + enclosed,
        ],
        {"Return-Path": b"<>", "From": b"MAILER-DAEMON@mx.example.org"},
        subtype="report",
        params="; report-type=delivery-status",
    )
    envelope = read_message(report, smp_spec).envelope
    assert envelope.content_type == "multipart/report"
    assert envelope.report_type == "delivery-status"
    assert envelope.bounced_message_ids == ("<ack.SMP24-0011@aminer.cn>",)
    headers_only = message(
        [text_part("failed"), b"Content-Type: text/rfc822-headers\r\n\r\n" + enclosed.split(b"\r\n\r\n")[0] + b"\r\n"],
        subtype="report",
        params="; report-type=delivery-status",
    )
    assert read_message(headers_only, smp_spec).envelope.bounced_message_ids == ("<ack.SMP24-0011@aminer.cn>",)


def test_attachment_names_in_every_encoding(smp_spec: FormSpec) -> None:
    name = "申报表-张伟.docx"
    dispositions = [
        b"attachment; filename*=UTF-8''" + "".join(f"%{byte:02X}" for byte in name.encode()).encode(),
        b'attachment; filename="' + encoded_word(name, "gb2312").encode() + b'"',
        b'attachment; filename="' + encoded_word(name, "GBK").encode() + b'"',
        b'attachment; filename="' + name.encode() + b'"',
        b'attachment; filename="' + name.encode("gbk") + b'"',
        b"attachment; filename*0*=UTF-8''%E7%94%B3%E6%8A%A5; filename*1*=%E8%A1%A8-%E5%BC%A0%E4%BC%9F.docx",
    ]
    for disposition in dispositions:
        submission = read_message(message([text_part("见附件"), attachment(FORM, disposition)]), smp_spec)
        assert submission.attachments[0].filename == name, disposition
        assert submission.form is not None and submission.form.attachment == name


def test_type_is_sniffed_from_content_and_inline_parts_count(smp_spec: FormSpec) -> None:
    octet = attachment(FORM, b'attachment; filename="form.bin"', "application/octet-stream")
    unnamed_inline = attachment(FORM, b"inline", "application/octet-stream")
    for part in (octet, unnamed_inline):
        submission = read_message(message([text_part("x"), part]), smp_spec)
        assert submission.attachments[0].kind == "docx"
        assert submission.attachments[0].role == "form"
        assert submission.form is not None


def test_the_form_among_a_cv_and_photos_and_several_forms(smp_spec: FormSpec) -> None:
    cv = paragraph_form(["个人简历", "姓名：张伟", "性别：男", "工作单位：清华大学", "电子邮箱：cv@example.org"])
    photo = base64.b64decode("R0lGODlhAQABAAAAACw=")
    second = table_form([*SMP_ROWS[:1], ["申请人姓名", "张伟"], ["所在单位", "清华大学"], ["申报课题", "3.1"]])
    raw = message(
        [
            text_part("材料见附件"),
            attachment(cv, b'attachment; filename="cv.docx"'),
            attachment(photo, b'attachment; filename="photo.gif"', "image/gif"),
            attachment(second, b'attachment; filename="draft.docx"'),
            attachment(FORM, b'attachment; filename="final.docx"'),
        ]
    )
    submission = read_message(raw, smp_spec)
    assert submission.form is not None and submission.form.attachment == "final.docx"
    assert [form.attachment for form in submission.other_forms] == ["draft.docx"]
    assert [a.role for a in submission.attachments] == ["document", "other", "document", "form"]
    assert submission.form.value("email") == "zhangwei@tsinghua.edu.cn"


def test_forwarded_message_carries_the_form(smp_spec: FormSpec) -> None:
    inner = message([text_part("原邮件"), attachment(FORM, b'attachment; filename="form.docx"')], boundary=b"inner")
    outer = message([text_part("转发申报表"), b"Content-Type: message/rfc822\r\n\r\n" + inner])
    submission = read_message(outer, smp_spec)
    assert submission.form is not None
    assert submission.attachments[0].path == ("2", "2")


def test_a_quoted_acknowledgement_is_not_a_form(smp_spec: FormSpec) -> None:
    quoted = "\n".join(f"> {row[0]}：{row[1]}" for row in SMP_ROWS)
    submission = read_message(message([text_part("收到，谢谢！\n\n" + quoted)]), smp_spec)
    assert submission.status == "no_form"


def zip_of(members: dict[str, bytes], *, gbk_names: bool = False) -> bytes:
    """A zip archive; with ``gbk_names`` its names are GBK bytes without the UTF-8 flag (Chinese Windows)."""
    placeholders = {name: f"{number:0{len(name.encode('gbk'))}d}" for number, name in enumerate(members)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(placeholders[name] if gbk_names else name, data)
    raw = buffer.getvalue()
    if gbk_names:
        for name, placeholder in placeholders.items():
            raw = raw.replace(placeholder.encode(), name.encode("gbk"))
    return raw


def test_zip_with_gbk_member_names(smp_spec: FormSpec) -> None:
    archive = zip_of({"材料/申报表.docx": FORM}, gbk_names=True)
    submission = read_message(
        message([text_part("x"), attachment(archive, b'attachment; filename="a.zip"', "application/zip")]), smp_spec
    )
    assert submission.form is not None
    assert submission.form.attachment.startswith("申报表")
    assert submission.attachments[0].kind == "zip"
    assert submission.attachments[1].path[-1].startswith("材料/申报表")


def test_zip_bombs_and_broken_archives(smp_spec: FormSpec) -> None:
    bomb = zip_of({"big.docx": b"\x00" * 50_000_000})
    many = zip_of({f"f{number}.txt": b"x" for number in range(300)})
    rar = b"Rar!\x1a\x07\x01\x00" + b"\x00" * 100
    for data, reason in ((bomb, "archive-refused"), (many, "archive-refused"), (rar, "corrupt")):
        part = attachment(data, b'attachment; filename="a.zip"', "application/octet-stream")
        submission = read_message(message([text_part("x"), part]), smp_spec)
        assert submission.unreadable is not None and submission.unreadable.reason == reason


def test_extract_parts_gives_safe_names(smp_spec: FormSpec) -> None:
    hostile_name = b'attachment; filename="../../etc/\x1b[31mpasswd\x07.docx"'
    parts = extract_parts(message([text_part("x"), attachment(FORM, hostile_name)]))
    assert len(parts) == 1
    described, data = parts[0]
    assert data == FORM
    assert "/" not in described.filename and "\x1b" not in described.filename and "\x07" not in described.filename
    assert described.kind == "docx"


def test_never_raises(smp_spec: FormSpec) -> None:
    for raw in (b"", b"\x00\xff" * 100, b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 50):
        submission = read_message(raw, smp_spec)
        assert submission.status == "no_form"
    huge = message([text_part("x")]) + b"y" * 200
    limited = read_message(huge, smp_spec, Limits(max_message_bytes=100))
    assert limited.unreadable is not None and limited.unreadable.reason == "too-large"
    assert limited.envelope.message_id == "<test.1@example.org>"
