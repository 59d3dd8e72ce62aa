"""Every shape an applicant's mail takes, made around one filled-in form at run time.

The tests (tests/parsers/test_shapes.py, tests/test_shapes_end_to_end.py) and the per-shape table of
``python -m benchmarks.extraction --shapes`` build their messages here: the form itself never
changes, only what it travels in (archives, Outlook's wrappers, forwards, odd MIME labels) or how
Word stored it (placeholders, tracked changes), so the fields read must be the form's own.

The archives and wrappers written by hand after their specifications are in
:mod:`benchmarks.containers`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr

from lxml import etree  # type: ignore[import-untyped]

from benchmarks.containers import rar4_stored, seven_zip, tnef, zip_flagged_utf8_over_gbk

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PLACEHOLDER_ZH = "单击或点击此处输入文字。"
PLACEHOLDER_EN = "Click or tap here to enter text."


@dataclass(frozen=True)
class Sent:
    """A filled-in form and who sends it: what every shape starts from."""

    form: bytes
    form_name: str  # e.g. "申报表-张伟.docx"
    from_name: str
    from_addr: str
    to_addr: str
    subject: str = "申报材料"
    message_id: str = "<shape@example.org>"
    body: str = "老师您好，申报表见附件，请查收。"


# ---------------------------------------------------------------------------------------------- Word edits


def _edit_document(docx: bytes, edit: Callable[[etree._Element], None]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(docx))
    root = etree.fromstring(source.read("word/document.xml"))
    edit(root)
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
            target.writestr(info, data if info.filename == "word/document.xml" else source.read(info))
    return buffer.getvalue()


def _w(name: str) -> str:
    return f"{{{W}}}{name}"


def _placeholder_control(prompt: str) -> etree._Element:
    """An inline content control showing its placeholder, as Word leaves an unfilled one."""
    return etree.fromstring(
        f'<w:sdt xmlns:w="{W}"><w:sdtPr><w:placeholder><w:docPart w:val="DefaultPlaceholder_-1854013440"/>'
        f'</w:placeholder><w:showingPlcHdr/></w:sdtPr><w:sdtContent><w:r><w:rPr><w:rStyle w:val="PlaceholderText"/>'
        f"</w:rPr><w:t>{prompt}</w:t></w:r></w:sdtContent></w:sdt>"
    )


def with_placeholders(docx: bytes) -> bytes:
    """Every empty table cell and paragraph-ending gap holds an unfilled content control; filled
    values sit in content controls of their own, as in a form built from Word's controls."""

    def edit(root: etree._Element) -> None:
        for number, cell in enumerate(root.iter(_w("tc"))):
            paragraphs = cell.findall(_w("p"))
            text = "".join(cell.itertext()).strip()
            if not paragraphs:
                continue
            prompt = PLACEHOLDER_ZH if number % 2 == 0 else PLACEHOLDER_EN
            if not text:
                paragraphs[0].append(_placeholder_control(prompt))
                continue
            for paragraph in paragraphs:
                runs = paragraph.findall(_w("r"))
                if not runs:
                    continue
                control = etree.SubElement(paragraph, _w("sdt"))
                etree.SubElement(control, _w("sdtPr"))
                content = etree.SubElement(control, _w("sdtContent"))
                for run in runs:
                    content.append(run)  # moves the run into the control

    return _edit_document(docx, edit)


def with_tracked_changes(docx: bytes) -> bytes:
    """The form as revised with Track Changes on: every run re-typed (inserted) after a deleted
    older text, a moved-away fragment in every cell, and a deleted row with another person's name."""
    author = f'w:author="秘书" w:date="2024-09-01T10:00:00Z" xmlns:w="{W}"'

    def edit(root: etree._Element) -> None:
        for number, run in enumerate(list(root.iter(_w("r")))):
            if run.find(_w("t")) is None or run.getparent().tag != _w("p"):
                continue
            parent = run.getparent()
            position = parent.index(run)
            deleted = etree.fromstring(
                f'<w:del w:id="{2 * number + 100}" {author}><w:r><w:delText>旧稿{number}</w:delText></w:r></w:del>'
            )
            inserted = etree.fromstring(f'<w:ins w:id="{2 * number + 101}" {author}/>')
            parent.insert(position, deleted)
            parent.remove(run)
            inserted.append(run)
            parent.insert(position + 1, inserted)
        for number, cell in enumerate(root.iter(_w("tc"))):
            paragraph = cell.find(_w("p"))
            if paragraph is not None:
                moved = etree.fromstring(
                    f'<w:moveFrom w:id="{number + 5000}" {author}><w:r><w:t>（已移走）</w:t></w:r></w:moveFrom>'
                )
                paragraph.append(moved)
        table = root.find(f".//{_w('tbl')}")
        if table is not None:
            first_row = table.find(_w("tr"))
            if first_row is not None:
                gone = etree.fromstring(
                    f'<w:tr xmlns:w="{W}"><w:trPr><w:del w:id="9000" {author}/></w:trPr>'
                    "<w:tc><w:p><w:r><w:t>申请人姓名 PI Name 项目负责人</w:t></w:r></w:p></w:tc>"
                    "<w:tc><w:p><w:r><w:t>删除的名字</w:t></w:r></w:p></w:tc></w:tr>"
                )
                first_row.addprevious(gone)

    return _edit_document(docx, edit)


def scan_of(text: str) -> bytes:
    """An image-only PDF, as a scanner makes of the signed printout: no text layer at all."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (620, 877), 255)
    draw = ImageDraw.Draw(image)
    for line in range(12):  # ruled lines and noise stand in for the printed form and signature
        draw.line((40, 80 + 60 * line, 580, 80 + 60 * line), fill=60, width=2)
    draw.text((40, 40), text.encode("ascii", "replace").decode(), fill=0)
    buffer = io.BytesIO()
    image.save(buffer, "PDF", resolution=75)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- messages


def _message(sent: Sent, *, subject: str | None = None, body: str | None = None) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((sent.from_name, sent.from_addr))
    message["To"] = sent.to_addr
    message["Subject"] = subject if subject is not None else sent.subject
    message["Message-ID"] = sent.message_id
    message["Date"] = "Sat, 07 Sep 2024 10:00:00 +0800"
    message.set_content(body if body is not None else sent.body)
    return message


def _attach(message: EmailMessage, data: bytes, name: str, content_type: str = "application/octet-stream") -> None:
    maintype, subtype = content_type.split("/", 1)
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)


def plain(sent: Sent) -> bytes:
    message = _message(sent)
    _attach(message, sent.form, sent.form_name, _type_of(sent.form_name))
    return message.as_bytes()


def _type_of(name: str) -> str:
    extension = name.rsplit(".", 1)[-1].lower()
    return {
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "pdf": "application/pdf",
        "doc": "application/msword",
    }.get(extension, "application/octet-stream")


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1] if "." in name else ""


def in_archive(kind: str) -> Callable[[Sent], bytes]:
    makers: dict[str, tuple[Callable[[dict[str, bytes]], bytes], str]] = {
        "7z": (seven_zip, "application/x-7z-compressed"),
        "rar": (rar4_stored, "application/x-rar-compressed"),
        "zip-utf8-gbk": (zip_flagged_utf8_over_gbk, "application/zip"),
    }
    make, content_type = makers[kind]

    def shape(sent: Sent) -> bytes:
        message = _message(sent)
        archive = make({f"申报材料/{sent.form_name}": sent.form, "申报材料/说明.txt": "见申报表".encode()})
        extension = "zip" if kind.startswith("zip") else kind
        _attach(message, archive, f"{_stem(sent.form_name)}.{extension}", content_type)
        return message.as_bytes()

    return shape


def outlook_tnef(sent: Sent) -> bytes:
    """Outlook in "Rich Text" mode: the form only inside winmail.dat."""
    message = _message(sent)
    _attach(message, tnef({sent.form_name: sent.form}), "winmail.dat", "application/ms-tnef")
    return message.as_bytes()


SECRETARY = ("王秘书", "office.secretary@example-lab.cn")


def forwarded_as_attachment(sent: Sent) -> bytes:
    """A secretary forwards the applicant's own mail (message/rfc822) with the form inside it."""
    original = replace(sent, message_id="<original-" + sent.message_id.strip("<>") + ">")
    outer = _message(
        replace(sent, from_name=SECRETARY[0], from_addr=SECRETARY[1]),
        subject=f"Fw: {sent.subject}",
        body="转发老师的申报材料，请查收。",
    )
    outer.add_attachment(_parse(plain(original)))  # message/rfc822, as "forward as attachment" sends it
    return outer.as_bytes()


def outlook_item(mail: bytes) -> bytes:
    """The mail saved as an Outlook item (.msg), written by aspose-email-foss (a dev dependency)."""
    from aspose.email_foss.msg import MapiMessage

    data: bytes = MapiMessage.from_email_message(_parse(mail)).to_bytes()
    return data


def forwarded_as_outlook_item(sent: Sent) -> bytes:
    """A secretary attaches the applicant's mail as saved from Outlook: a .msg holding the form."""
    original = plain(replace(sent, message_id="<original-" + sent.message_id.strip("<>") + ">"))
    outer = _message(
        replace(sent, from_name=SECRETARY[0], from_addr=SECRETARY[1]),
        subject=f"FW: {sent.subject}",
        body="老师的申报邮件见附件。",
    )
    _attach(outer, outlook_item(original), f"{sent.subject}.msg", "application/vnd.ms-outlook")
    return outer.as_bytes()


def _parse(raw: bytes) -> EmailMessage:
    import email

    parsed = email.message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    assert isinstance(parsed, EmailMessage)
    return parsed


def forwarded_inline(sent: Sent) -> bytes:
    """A secretary forwards inline (Gmail style): the header block quoted, the form attached again."""
    body = (
        "请查收张老师的申报材料。\n\n"
        "---------- Forwarded message ---------\n"
        f"From: {sent.from_name} <{sent.from_addr}>\n"
        "Date: 2024年9月6日周五 下午3:12\n"
        f"Subject: {sent.subject}\n"
        f"To: <{sent.to_addr}>\n\n"
        f"{sent.body}\n"
    )
    message = _message(
        replace(sent, from_name=SECRETARY[0], from_addr=SECRETARY[1]), subject=f"Fwd: {sent.subject}", body=body
    )
    _attach(message, sent.form, sent.form_name, _type_of(sent.form_name))
    return message.as_bytes()


def _one_part(sent: Sent, name: str, content_type: str, disposition: str | None) -> bytes:
    """The form as one part with exactly the given type, name and disposition."""
    message = _message(sent)
    _attach(message, sent.form, name or "x", content_type)
    part = list(message.iter_attachments())[-1]
    del part["Content-Disposition"]
    if name:
        part.set_param("name", name)
    else:
        part.del_param("name")
    if disposition is not None:
        part["Content-Disposition"] = disposition
    return message.as_bytes()


def upper_case_extension(sent: Sent) -> bytes:
    name = f"{_stem(sent.form_name)}.{_extension(sent.form_name).upper()}"
    return _one_part(sent, name, "application/octet-stream", f'attachment; filename="{name}"')


def no_extension(sent: Sent) -> bytes:
    return _one_part(sent, _stem(sent.form_name), "application/octet-stream", "attachment")


def misnamed(extension: str) -> Callable[[Sent], bytes]:
    def shape(sent: Sent) -> bytes:
        name = f"{_stem(sent.form_name)}.{extension}"
        return _one_part(sent, name, _type_of(name), "attachment")

    return shape


def kswps_type(sent: Sent) -> bytes:
    """WPS Office's own media type, whatever it saved."""
    return _one_part(sent, sent.form_name, "application/kswps", "attachment")


def name_parameter_only(sent: Sent) -> bytes:
    """No Content-Disposition at all: the name only in Content-Type (older Foxmail, some webmail)."""
    return _one_part(sent, sent.form_name, "application/octet-stream", None)


def apple_inline(sent: Sent) -> bytes:
    """Apple Mail: the file inline between two HTML parts of a multipart/mixed inside the alternative."""
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((sent.from_name, sent.from_addr))
    message["To"] = sent.to_addr
    message["Subject"] = sent.subject
    message["Message-ID"] = sent.message_id
    message["Date"] = "Sat, 07 Sep 2024 10:00:00 +0800"
    message["X-Mailer"] = "Apple Mail (2.3774.600.62)"
    message.set_content(sent.body)
    mixed = EmailMessage(policy=SMTP)
    mixed.add_related(f"<html><body><div>{sent.body}</div></body></html>", subtype="html")
    mixed.make_mixed()
    mixed.add_attachment(
        sent.form, maintype="application", subtype="octet-stream", filename=sent.form_name, disposition="inline"
    )
    closing = EmailMessage(policy=SMTP)
    closing.set_content("<html><body><div><br></div></body></html>", subtype="html")
    mixed.attach(closing)
    message.make_alternative()
    message.attach(mixed)
    return message.as_bytes()


def with_signed_scan(sent: Sent) -> bytes:
    """The form and a scan of its signed printout, named alike."""
    message = _message(sent)
    _attach(message, sent.form, sent.form_name, _type_of(sent.form_name))
    _attach(message, scan_of("signed"), f"{_stem(sent.form_name)}（签字扫描）.pdf", "application/pdf")
    return message.as_bytes()


def docx_edit(edit: Callable[[bytes], bytes]) -> Callable[[Sent], bytes]:
    def shape(sent: Sent) -> bytes:
        return plain(replace(sent, form=edit(sent.form)))

    return shape


@dataclass(frozen=True)
class Shape:
    name: str
    build: Callable[[Sent], bytes]
    docx_only: bool = False  # a change to how Word stored the form


SHAPES: tuple[Shape, ...] = (
    Shape("plain", plain),
    Shape("7z", in_archive("7z")),
    Shape("rar", in_archive("rar")),
    Shape("zip-utf8-flag-gbk-names", in_archive("zip-utf8-gbk")),
    Shape("winmail.dat", outlook_tnef),
    Shape("forwarded-rfc822", forwarded_as_attachment),
    Shape("forwarded-inline", forwarded_inline),
    Shape("forwarded-outlook-item", forwarded_as_outlook_item),
    Shape("placeholders", docx_edit(with_placeholders), docx_only=True),
    Shape("tracked-changes", docx_edit(with_tracked_changes), docx_only=True),
    Shape("upper-case-extension", upper_case_extension),
    Shape("no-extension", no_extension),
    Shape("docx-named-doc", misnamed("doc"), docx_only=True),
    Shape("docx-named-pdf", misnamed("pdf"), docx_only=True),
    Shape("application/kswps", kswps_type),
    Shape("name-parameter-only", name_parameter_only),
    Shape("apple-inline", apple_inline),
    Shape("with-signed-scan", with_signed_scan),
)
