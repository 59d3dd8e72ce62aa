"""Acknowledgements: every outcome renders, parses back clean, threads, and resists hostile input."""

from __future__ import annotations

import base64
import dataclasses
import email
import re
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailbot.acknowledge import (
    OUTCOMES,
    AckContext,
    compose_acknowledgement,
    is_our_message_id,
    make_message_id,
    thread_references,
    valid_address,
)
from mailbot.config import CallSettings, Settings, load_settings
from mailbot.config_accounts import SmtpSettings
from mailbot.mail_writer import Attachment, OutgoingHeaders, alternative_mail, message_bytes, sign_dkim
from parsers.model import UNREADABLE_REASONS
from templates import GENERIC_REASON, TemplateSet, local_time, one_line, reason_sentence

REPO = Path(__file__).resolve().parent.parent
SETTINGS: Settings = load_settings(REPO / "config.example.toml")
SMP = SETTINGS.call_by_id("smp-zhipu-2024")
CAAI = SETTINGS.call_by_id("caai-ant-2024")
NOW = datetime(2024, 9, 8, 15, 42, tzinfo=UTC)
TITLE = "面向临床诊疗的可信医学问答大模型研究"
HOSTILE = "张伟\r\nBcc: victim@example.com\n\x1b[31m<script>alert(1)</script>\u2028X-Evil: 1\u202e\x00"
STATUS = {
    "accepted": "【已收到】",
    "incomplete": "【材料不完整】",
    "late": "【逾期】",
    "revision": "【已更新】",
    "duplicate": "【重复申报】",
    "no_attachment": "【未见附件】",
    "unreadable": "【无法读取】",
}
TEMPLATES = TemplateSet()


def context(call: CallSettings = SMP, outcome: str = "accepted", **changes: Any) -> AckContext:
    has_form = outcome not in ("no_attachment", "unreadable")
    base = AckContext(
        call=call,
        outcome=outcome,
        reference=f"{call.reference_prefix}-0042",
        fields={
            "project_title": TITLE,
            "applicant_name": "陈美玲",
            "gender": "女",
            "institution": "复旦大学",
            "email": "chenmeiling@fudan.edu.cn",
            "phone": "13812345678",
            "topic": call.topic[1].code,
            "budget": 15.0,
            "prior_grant": False,
        }
        if has_form
        else {},
        form_file="申报表-陈美玲.docx" if outcome != "no_attachment" else None,
        missing=(),
        arrival=datetime(2024, 8, 20, 9, 30, 5, tzinfo=UTC),
        supersedes_reference=f"{call.reference_prefix}-0007" if outcome == "revision" else None,
        duplicate_of_reference=f"{call.reference_prefix}-0003" if outcome == "duplicate" else None,
        unreadable_reason="encrypted" if outcome == "unreadable" else None,
        original_message_id="<202408201730.abc@fudan.edu.cn>",
        original_references=("<root.1@fudan.edu.cn>",),
        original_subject="申报SMP-智谱基金",
        reply_to="secretary@fudan.edu.cn",
        applicant_email="chenmeiling@fudan.edu.cn",
        message_id=make_message_id(call, f"{call.reference_prefix}-0042", "unique-1"),
    )
    return dataclasses.replace(base, **changes)


def compose(ctx: AckContext, templates: TemplateSet = TEMPLATES) -> tuple[bytes, EmailMessage]:
    """The serialised answer and the message parsed back from those bytes."""
    raw = bytes(compose_acknowledgement(ctx, templates, NOW))
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    # Base64 bodies keep the CRLF line ends of transport; compare with plain newlines.
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def all_defects(msg: EmailMessage) -> list[Any]:
    found = list(msg.defects)
    for part in msg.walk():
        found.extend(part.defects)
    return found


# ---------------------------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize("call", [SMP, CAAI], ids=lambda c: c.id)
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_every_outcome_renders_text_and_html_that_parse_back_clean(call: CallSettings, outcome: str) -> None:
    raw, msg = compose(context(call, outcome))
    assert all_defects(msg) == []
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    assert raw.isascii(), "headers and bodies are encoded for 7-bit transport"
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")

    subject = str(msg["Subject"])
    assert subject.startswith(STATUS[outcome] + call.name_zh)
    assert " / " in subject, "the English subject follows the Chinese one"
    text, html = bodies(msg)
    for body in (text, html):
        assert call.name_zh in body and call.name_en in body
        assert "您好" in body and "Dear applicant" in body
        assert body.index("您好") < body.index("Dear applicant"), "Chinese first, English below"
        assert "2024年8月20日 17:30:05（北京时间，UTC+08:00）" in body, "arrival in Beijing time"
        assert call.reference_prefix + "-0042" in body
    assert "\n\n\n" not in text, "paragraphs are one blank line apart"
    assert "<table" in html and "<script" not in html.lower()
    assert not re.search(r"\sclass=", html), "mail clients drop stylesheets: no CSS classes"
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html), "no remote images or links"


@pytest.mark.parametrize("outcome", ["accepted", "incomplete", "late", "revision", "duplicate"])
def test_answers_to_a_readable_form_show_the_fields_read_and_the_file(outcome: str) -> None:
    _, msg = compose(context(SMP, outcome))
    text, html = bodies(msg)
    for body in (text, html):
        assert "申报表-陈美玲.docx" in body
        assert TITLE in body and "陈美玲" in body and "复旦大学" in body
        assert "1.2 医学影像与报告的多模态生成" in body, "topic code with its name"
        assert "15 万元" in body
        assert "否 No" in body
        assert "项目名称" in body and "Project title" in body
    assert TITLE in str(msg["Subject"])


def test_accepted_subject_matches_the_fund_format() -> None:
    _, msg = compose(context(SMP, "accepted"))
    assert str(msg["Subject"]) == (
        f"【已收到】{SMP.name_zh}申报 · {TITLE} · 编号 SMP24-0042 / Received: application SMP24-0042"
    )


def test_incomplete_lists_missing_fields_and_a_missing_contact_as_one_item() -> None:
    fields = {**context().fields, "email": None, "phone": None, "topic": None}
    ctx = context(SMP, "incomplete", fields=fields, missing=("email", "phone", "topic"))
    text, html = bodies(compose(ctx)[1])
    assert "  - 电子邮箱或电话（至少填写一项）\n  - 申报课题\n" in text
    assert "  - Email or Phone (at least one)\n  - Topic\n" in text
    assert text.count("（缺失 missing）") == 3
    assert "重新附上完整填写的申报表" in text and "before the deadline" in text
    assert "电子邮箱或电话（至少填写一项）" in html and html.count("缺失 · missing") == 3


def test_late_states_deadline_and_arrival_in_beijing_time() -> None:
    ctx = context(SMP, "late", reference=None, arrival=datetime(2024, 9, 8, 16, 0, 7, tzinfo=UTC))
    _, msg = compose(ctx)
    text, html = bodies(msg)
    for body in (text, html):
        assert "2024年9月8日 24:00（北京时间，UTC+08:00）" in body
        assert "2024年9月9日 00:00:07（北京时间，UTC+08:00）" in body
        assert "8 September 2024, 24:00 (Beijing time, UTC+08:00)" in body
        assert "9 September 2024, 00:00:07 (Beijing time, UTC+08:00)" in body
    assert "编号" not in str(msg["Subject"]), "no reference was given, none is shown"


def test_revision_names_the_reference_it_replaces() -> None:
    text, html = bodies(compose(context(SMP, "revision"))[1])
    assert "本次提交（新编号 SMP24-0042）将替换您此前的申报（编号 SMP24-0007）" in text
    assert "replaces your earlier one (reference SMP24-0007)" in text
    assert "SMP24-0007" in html
    same = context(SMP, "revision", supersedes_reference="SMP24-0042")
    assert "申报编号仍为 SMP24-0042" in bodies(compose(same)[1])[0]


def test_duplicate_explains_the_one_application_rule() -> None:
    text, _ = bodies(compose(context(SMP, "duplicate"))[1])
    assert "每位申请人在本基金限提交一份申请" in text
    assert "SMP24-0003" in text and "撤回原申报" in text
    assert "Each applicant may submit one application to this call" in text


def test_no_attachment_explains_attaching_and_refuses_cloud_links_only_when_configured() -> None:
    text, _ = bodies(compose(context(SMP, "no_attachment"))[1])
    assert "添加附件" in text and "Attach" in text
    assert "不接受网盘链接" in text and "cloud drives" in text
    assert "从申报表中读取的信息" not in text
    lenient = SMP.model_copy(update={"cloud_links_accepted": True})
    text, _ = bodies(compose(context(lenient, "no_attachment"))[1])
    assert "网盘" not in text and "cloud drive" not in text
    assert "\n\n\n" not in text


def test_answers_after_the_deadline_do_not_invite_a_resend() -> None:
    after = datetime(2024, 9, 10, tzinfo=UTC)
    text, _ = bodies(compose(context(SMP, "no_attachment", arrival=after))[1])
    assert "申报已于 2024年9月8日 24:00" in text and "reply to this message with the completed" not in text


def test_unreadable_says_a_person_will_review_and_gives_the_reason(tmp_path: Path) -> None:
    (tmp_path / "reasons.toml").write_text(
        '[encrypted]\nzh = "文件设置了打开密码。"\nen = "the file is password-protected."\n'
    )
    text, html = bodies(compose(context(SMP, "unreadable"), TemplateSet(tmp_path))[1])
    assert "无法自动读取申报表的内容：文件设置了打开密码。" in text
    assert "could not read the application form automatically: the file is password-protected." in text
    assert "工作人员会在两个工作日内人工查看" in text and "look at it by hand" in text
    assert "文件设置了打开密码" in html


def test_an_unknown_reason_falls_back_to_generic_words() -> None:
    ctx = context(SMP, "unreadable", unreadable_reason="no-such-reason")
    text, _ = bodies(compose(ctx)[1])
    assert GENERIC_REASON.zh in text and GENERIC_REASON.en in text


@pytest.mark.parametrize("code", UNREADABLE_REASONS)
def test_every_unreadable_reason_has_words_in_both_languages(code: str) -> None:
    reason = TEMPLATES.reason(code)
    assert reason.zh.strip() and reason.en.strip()
    assert reason_sentence(code, "zh") == reason.zh and reason_sentence(code, "en") == reason.en


# ---------------------------------------------------------------------------------------------- headers


def test_headers_mark_an_automatic_answer_from_the_call_sender() -> None:
    raw, msg = compose(context(SMP, "accepted"))
    assert msg["From"].addresses[0].display_name == SMP.sender.name
    assert msg["From"].addresses[0].addr_spec == SMP.sender.address
    assert str(msg["To"]) == "secretary@fudan.edu.cn"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Precedence"] is None, "RFC 3834 discourages Precedence; Auto-Submitted is the standard mark"
    assert msg["Date"].datetime == NOW and msg["Date"].datetime.utcoffset().total_seconds() == 8 * 3600
    assert msg["Message-ID"] == context().message_id
    assert raw.count(b"\r\nSubject:") == 1


def test_threading_headers_point_at_the_original() -> None:
    _, msg = compose(context())
    assert msg["In-Reply-To"] == "<202408201730.abc@fudan.edu.cn>"
    assert str(msg["References"]) == "<root.1@fudan.edu.cn> <202408201730.abc@fudan.edu.cn>"


def test_a_missing_or_broken_original_id_leaves_threading_out() -> None:
    _, msg = compose(context(original_message_id=None, original_references=()))
    assert msg["In-Reply-To"] is None and msg["References"] is None
    _, msg = compose(context(original_message_id="<a b@c>\r\nBcc: x@y.com", original_references=()))
    assert msg["In-Reply-To"] is None and msg["Bcc"] is None


def test_references_are_trimmed_from_the_middle() -> None:
    refs = [f"<ref{i}.{'x' * 60}@example.edu.cn>" for i in range(40)]
    chain = thread_references(refs, "<orig@example.edu.cn>")
    assert chain[0] == refs[0] and chain[-1] == "<orig@example.edu.cn>" and chain[-2] == refs[-1]
    assert len(chain) <= 10 and len(" ".join(chain)) <= 900
    assert thread_references(["<a@b>", "<a@b>", "junk"], "a@b") == ["<a@b>"]


@pytest.mark.parametrize(
    "applicant_email",
    [
        "chenmeiling@fudan.edu.cn",
        " chenmeiling@fudan.edu.cn ",
        "Secretary@Fudan.edu.cn",
        None,
        "chen@fudan.edu.cn\r\nBcc: victim@example.com",
        "min.gao@aminer.cn",
    ],
)
def test_the_answer_is_never_copied_to_the_form_email(applicant_email: str | None) -> None:
    """A form's email is written by whoever sent it: copying the answer there relays to any address."""
    _, msg = compose(context(applicant_email=applicant_email))
    assert msg["Cc"] is None and msg["Bcc"] is None


def test_an_unusable_recipient_or_message_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid address"):
        compose_acknowledgement(context(reply_to="x@y.com\r\nBcc: z@w.com"), TEMPLATES, NOW)
    with pytest.raises(ValueError, match="Message-ID"):
        compose_acknowledgement(context(message_id="not an id"), TEMPLATES, NOW)
    with pytest.raises(ValueError, match="aware"):
        compose_acknowledgement(context(), TEMPLATES, datetime(2024, 9, 8, 12))
    with pytest.raises(ValueError, match="outcome"):
        compose_acknowledgement(context(outcome="ignored"), TEMPLATES, NOW)
    with pytest.raises(ValueError, match="reference"):
        compose_acknowledgement(context(outcome="accepted", reference=None), TEMPLATES, NOW)


def test_hostile_values_cannot_inject_headers_or_markup() -> None:
    fields = {**context().fields, "project_title": HOSTILE + "标题", "applicant_name": HOSTILE}
    ctx = context(
        SMP,
        "accepted",
        fields=fields,
        form_file=HOSTILE + ".docx",
        original_subject=HOSTILE,
        applicant_email=HOSTILE,
    )
    _, msg = compose(ctx)
    assert all_defects(msg) == []
    names = [name.lower() for name in msg]
    assert "bcc" not in names and "x-evil" not in names
    assert sorted(names) == sorted(
        [
            "from",
            "to",
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
        ]
    )
    subject = str(msg["Subject"])
    assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029\u202e]", subject)
    assert "Bcc: victim@example.com" in subject, "the text stays visible, only its line breaks go"
    text, html = bodies(msg)
    for body in (text, html):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202e]", body)
        assert "[31m" not in body
    assert "<script>alert(1)</script>" in text, "text bodies are not escaped"
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_is_autoescaped_and_text_is_not() -> None:
    fields = {**context().fields, "project_title": 'A & B "<i>"'}
    text, html = bodies(compose(context(fields=fields))[1])
    assert 'A & B "<i>"' in text
    assert "A &amp; B &#34;&lt;i&gt;&#34;" in html


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from([*"申报项目研究大模型 ·（）-", "A", "b", " ", "\n", "\t", "\x1b", "é"]),
        max_size=80,
    )
)
def test_any_title_round_trips_into_the_subject(title: str) -> None:
    fields = {**context().fields, "project_title": title}
    _, msg = compose(context(fields=fields))
    shown = one_line(title, 60)
    middle = f" · {shown}" if shown else ""
    assert str(msg["Subject"]) == (
        f"【已收到】{SMP.name_zh}申报{middle} · 编号 SMP24-0042 / Received: application SMP24-0042"
    )


@given(st.text(alphabet=st.sampled_from([*'=?_Qqb:;,"<>()@. ', "a", "Z", "申", "é"]), min_size=1, max_size=100))
@example('Fund Office, the Artificial Intelligence "Large" Model Interdisciplinary Fund Beijing')
def test_subjects_and_sender_names_of_any_text_read_back_as_written(text: str) -> None:
    # ASCII too: a literal "=?utf-8?q?...?=" must stay text, and quotes, commas and angle brackets
    # in a display name must not change the address
    written = one_line(text, 80) or "x"
    call = SMP.model_copy(update={"sender": SMP.sender.model_copy(update={"name": written})})
    raw = bytes(compose_acknowledgement(context(call, original_subject=written), TEMPLATES, NOW))
    # decoded by RFC 2047 alone: Python's newer header parser doubles a space at the start of a
    # folded encoded word, which the encoding does not contain
    as_written = email.message_from_bytes(raw)["From"]
    decoded = str(make_header(decode_header(as_written)))
    assert decoded in (formataddr((written, SMP.sender.address)), f"{written} <{SMP.sender.address}>")
    assert all(len(line) <= 78 for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n"))


def test_a_line_break_never_reaches_a_header() -> None:
    headers = OutgoingHeaders(
        sender_name="Office",
        sender_address="min.gao@aminer.cn",
        to="a@example.org",
        cc=None,
        subject="Received\r\nBcc: victim@example.org",
        date=NOW,
        message_id="<a@b>",
        in_reply_to=None,
        references=[],
    )
    with pytest.raises(ValueError, match="break lines"):
        alternative_mail(headers, "text", "<p>html</p>")


def test_the_one_writer_folds_several_recipients_and_attaches_files() -> None:
    coordinators = [f"coordinator.number.{i}@university.example.edu.cn" for i in range(4)]
    headers = OutgoingHeaders(
        sender_name="基金办公室",
        sender_address="min.gao@aminer.cn",
        to=coordinators,
        cc=None,
        subject="每日摘要 / Daily digest",
        date=NOW,
        message_id="<digest@aminer.cn>",
        in_reply_to=None,
        references=[],
        auto_submitted="auto-generated",
    )
    book = Attachment("smp-2024-09-02.xlsx", "application/vnd.ms-excel", bytes(range(256)) * 3)
    raw = alternative_mail(headers, "正文", "<p>正文</p>", [book])
    assert all(len(line) <= 78 for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert [a.addr_spec for a in parsed["To"].addresses] == coordinators
    assert parsed.get_content_type() == "multipart/mixed"
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and plain.get_content() == "正文\r\n"
    assert rich is not None and rich.get_content() == "<p>正文</p>\r\n"
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "smp-2024-09-02.xlsx"
    assert attachment.get_payload(decode=True) == bytes(range(256)) * 3


# ---------------------------------------------------------------------------------------------- message ids


def test_message_ids_are_ours_stable_and_recognised(corpus_dir: Path) -> None:
    mid = make_message_id(SMP, "SMP24-0042", "row-17")
    assert re.fullmatch(r"<ack\.SMP24-0042\.[0-9a-f]{10}@aminer\.cn>", mid)
    assert mid == make_message_id(SMP, "SMP24-0042", "row-17")
    assert mid != make_message_id(SMP, "SMP24-0042", "row-18")
    assert re.fullmatch(r"<ack\.ANT24\.[0-9a-f]{10}@caai\.cn>", make_message_id(CAAI, None, "x"))
    assert is_our_message_id(mid, SETTINGS.call)
    assert not is_our_message_id(mid, [CAAI])
    assert not is_our_message_id("<ack.SMP24-0042.0123456789@elsewhere.cn>", SETTINGS.call)
    assert not is_our_message_id("<202408131926589361545@seu.edu.cn>", SETTINGS.call)
    quoted = set()
    for path in sorted(corpus_dir.glob("*.eml")):
        original = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        quoted.update(re.findall(r"<ack\.[^>]+>", str(original.get("In-Reply-To", ""))))
    assert quoted, "the corpus holds replies to acknowledgements"
    assert all(is_our_message_id(q, SETTINGS.call) for q in quoted)


def test_address_syntax() -> None:
    assert valid_address("a.b+c@x-y.edu.cn") == "a.b+c@x-y.edu.cn"
    for bad in [
        "",
        "a",
        "a@b",
        "a b@c.cn",
        "a@b..cn",
        "<a@b.cn>",
        "a@b.cn>",
        "a@-b.cn",
        "张@b.cn",
        "a@b.cn\nBcc: c@d.cn",
    ]:
        assert valid_address(bad) is None, bad


def test_local_time_formats() -> None:
    deadline = datetime.fromisoformat("2024-09-09T00:00:00+08:00")
    assert local_time(deadline, "Asia/Shanghai", "zh", end_of_day=True) == "2024年9月8日 24:00（北京时间，UTC+08:00）"
    assert local_time(deadline, "Asia/Shanghai", "zh") == "2024年9月9日 00:00（北京时间，UTC+08:00）"
    assert local_time(deadline, "Europe/Berlin", "en") == "8 September 2024, 18:00 (Europe/Berlin, UTC+02:00)"
    with pytest.raises(ValueError, match="naive"):
        local_time(datetime(2024, 9, 9), "Asia/Shanghai")


# ---------------------------------------------------------------------------------------------- overrides


def test_an_override_folder_wins_and_tables_merge_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "ack").mkdir()
    (tmp_path / "ack" / "accepted.txt.j2").write_text("自定义 {{ reference }} {{ title }}\n", encoding="utf-8")
    (tmp_path / "ack" / "outcomes.toml").write_text(
        '[accepted]\nstatus_zh = "收讫"\nstatus_en = "Got it"\naccent = "#000000"\n'
        'subject = "收讫 {{ reference }} / Got it"\n',
        encoding="utf-8",
    )
    custom = TemplateSet(tmp_path)
    text, html = bodies(compose(context(), custom)[1])
    assert text == f"自定义 SMP24-0042 {TITLE}\n"
    assert "收讫 · Got it" in html, "the packaged HTML template with the overriding table"
    assert str(compose(context(), custom)[1]["Subject"]) == "收讫 SMP24-0042 / Got it"
    revision = compose(context(outcome="revision"), custom)[1]
    assert str(revision["Subject"]).startswith("【已更新】"), "outcomes the override leaves out stay packaged"


def test_an_override_may_change_one_key_of_a_table(tmp_path: Path) -> None:
    (tmp_path / "ack").mkdir()
    (tmp_path / "ack" / "outcomes.toml").write_text(
        '[late]\nsubject = "【逾期】{{ call.name_zh }} / Late"\n', encoding="utf-8"
    )
    _, msg = compose(context(outcome="late"), TemplateSet(tmp_path))
    assert str(msg["Subject"]) == f"【逾期】{SMP.name_zh} / Late"
    assert "逾期 · Late" in bodies(msg)[1], "status and colour still come from the packaged table"


def test_a_missing_override_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TemplateSet(tmp_path / "absent")


def test_the_configured_folder_is_the_override(tmp_path: Path) -> None:
    configured = SETTINGS.model_copy(update={"templates": SETTINGS.templates.model_copy(update={"dir": str(tmp_path)})})
    assert TemplateSet(configured.templates.dir).override_dir == tmp_path
    assert TemplateSet(SETTINGS.templates.dir).override_dir is None


def test_the_wheel_ships_the_templates_and_they_load_from_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("grantmail_intake-*.whl")  # the distribution name; the command is mailbot
    names = zipfile.ZipFile(wheel).namelist()
    packaged = sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / "templates").rglob("*")
        if p.is_file() and p.suffix in (".j2", ".toml")
    )
    assert packaged and set(packaged) <= set(names)
    assert {f"templates/ack/{o}.{kind}.j2" for o in OUTCOMES for kind in ("txt", "html")} <= set(names)
    # Import from the wheel itself (a zip on sys.path), away from the checkout.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import templates; "
        "assert templates.__file__.startswith(sys.argv[1]), templates.__file__; "
        "t = templates.TemplateSet(); t.environment.get_template('ack/accepted.html.j2'); "
        "print(t.table('ack/outcomes.toml')['accepted']['status_zh'])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, str(wheel)], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "已收到"


# ---------------------------------------------------------------------------------------------- DKIM


def _rsa_key() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_dkim_signature_verifies_and_breaks_on_tampering() -> None:
    private, public = _rsa_key()
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2024._domainkey.aminer.cn."
        return record

    raw = bytes(compose_acknowledgement(context(), TEMPLATES, NOW))
    signed = sign_dkim(raw, "mail2024", "aminer.cn", private)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(raw)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"SMP24-0042", b"SMP24-0043"), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"\r\nTo: secretary@", b"\r\nTo: someone@"), dnsfunc=dns)


def test_message_bytes_signs_only_when_dkim_is_configured(tmp_path: Path) -> None:
    private, _ = _rsa_key()
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(private)
    msg = compose_acknowledgement(context(), TEMPLATES, NOW)
    plain = SmtpSettings(host="smtp.example.org")
    assert message_bytes(msg, plain) == bytes(msg)
    signing = SmtpSettings(
        host="smtp.example.org", dkim_selector="s1", dkim_domain="aminer.cn", dkim_key_file=str(key_file)
    )
    assert message_bytes(msg, signing).startswith(b"DKIM-Signature: ")
    with pytest.raises(ValueError, match="dkim_key_file"):
        message_bytes(msg, SmtpSettings(host="smtp.example.org", dkim_selector="s1"))
