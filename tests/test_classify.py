"""Machine-made mail, replies to the fund and submission intent, judged from the envelope alone."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailbot.classify import (
    cloud_link,
    fresh_text,
    is_question,
    is_reply_subject,
    machine_generated,
    machine_looking,
    mentions_submission,
    replies_to_us,
    says_it_replaces,
)
from mailbot.config import load_settings
from parsers.message import read_message
from parsers.model import Envelope

OWN = frozenset({"min.gao@aminer.cn", "myjj@caai.cn"})
ACK_SUBJECT = "【已收到】SMP-智谱基金申报 · 融合法条推理的类案检索大模型研究 · 编号 SMP24-0003"
QUOTED_ACK = (
    "发件人: min.gao@aminer.cn\n发送时间: 2024年8月13日 16:12\n主题: " + ACK_SUBJECT + "\n\n"
    "您好！我们已收到您的申报材料，信息如下：\n编号：SMP24-0003\n如信息有误，请回复本邮件说明。"
)


def envelope(**changes: Any) -> Envelope:
    """A plain human message to the SMP mailbox; ``changes`` override any field."""
    base = Envelope(
        message_id="<m1@example.edu.cn>",
        subject="申报",
        from_addr="zhangwei@pku.edu.cn",
        from_name="张伟",
        to=("min.gao@aminer.cn",),
        cc=(),
        reply_to=(),
        date=datetime(2024, 8, 20, 10, 0, tzinfo=UTC),
        in_reply_to=(),
        references=(),
        return_path="zhangwei@pku.edu.cn",
        content_type="multipart/mixed",
        report_type=None,
        headers={},
        body_text="",
        received_times=(),
    )
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------- machine mail


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"headers": {"auto-submitted": "auto-replied"}}, "auto-submitted:auto-replied"),
        ({"headers": {"auto-submitted": "auto-generated; type=dsn"}}, "auto-submitted:auto-generated"),
        ({"headers": {"x-autoreply": "yes"}}, "x-autoreply"),
        ({"headers": {"x-autorespond": "1"}}, "x-autorespond"),
        ({"headers": {"precedence": "bulk"}}, "precedence:bulk"),
        ({"headers": {"precedence": "Junk"}}, "precedence:junk"),
        ({"headers": {"precedence": "list"}}, "precedence:list"),
        ({"headers": {"list-id": "CIPS会员通讯 <news.cipsc.org.cn>"}}, "list-id"),
        ({"headers": {"list-unsubscribe": "<mailto:unsubscribe@cipsc.org.cn>"}}, "list-unsubscribe"),
        ({"return_path": ""}, "null-return-path"),
        ({"from_addr": "MAILER-DAEMON@mx.aminer.cn"}, "mailer-daemon"),
        ({"return_path": "postmaster@mail.example.org"}, "mailer-daemon"),
        (
            {"content_type": "multipart/report", "report_type": "delivery-status"},
            "report:delivery-status",
        ),
        (
            {"content_type": "multipart/report", "report_type": "disposition-notification"},
            "report:disposition-notification",
        ),
        (
            {"content_type": "multipart/report", "report_type": "feedback-report"},
            "report:feedback-report",
        ),
        ({"headers": {"x-failed-recipients": "a@b.cn"}}, "x-failed-recipients"),
        (
            {"headers": {"x-auto-response-suppress": "All"}, "subject": "Automatic reply: 【已收到】SMP"},
            "exchange-auto-reply",
        ),
        (
            {"headers": {"x-auto-response-suppress": "All"}, "subject": "自动回复: 关于申报截止的提醒"},
            "exchange-auto-reply",
        ),
        (
            {"headers": {"x-auto-response-suppress": "All"}, "subject": "Out of Office: 申报"},
            "exchange-auto-reply",
        ),
        (
            {"headers": {"x-auto-response-suppress": "All"}, "subject": "自动答复: 申报"},
            "exchange-auto-reply",
        ),
        ({"from_addr": "Min.Gao@aminer.cn"}, "own-address"),
        # RFC 2369 list fields beyond List-Id, and the list managers' own headers
        ({"headers": {"list-post": "<mailto:talk@lists.example.org>"}}, "list-post"),
        ({"headers": {"list-help": "<mailto:talk-request@lists.example.org?subject=help>"}}, "list-help"),
        ({"headers": {"list-subscribe": "<mailto:talk-ctl@example.org?body=subscribe>"}}, "list-subscribe"),
        ({"headers": {"mailing-list": "contact talk-help@example.org; run by ezmlm"}}, "mailing-list"),
        ({"headers": {"x-mlserver": "fml [fml 4.0.3 release]"}}, "x-mlserver"),
        ({"headers": {"x-mailman-version": "2.1.39"}}, "x-mailman-version"),
        ({"headers": {"x-listprocessor-version": "8.2.10/020311/17:52 -- ListProc(tm)"}}, "x-listprocessor-version"),
        # the senders nobody reads answers to, however the name is spelt
        ({"from_addr": "noreply@example.com"}, "no-reply-sender"),
        ({"from_addr": "no-reply@sns.amazonaws.com"}, "no-reply-sender"),
        ({"from_addr": "do_not_reply@service.example.cn"}, "no-reply-sender"),
        ({"from_addr": "DoNotReply+1234@bank.example"}, "no-reply-sender"),
        ({"from_addr": "dmarc-noreply@example.com"}, "no-reply-sender"),
        ({"from_addr": "post_master@vtext.com"}, "mailer-daemon"),
        ({"from_addr": "postmaster\\@xxx.com@xxx.com"}, "mailer-daemon"),
        ({"from_addr": "Mailer_Daemon@mx.example.org"}, "mailer-daemon"),
    ],
)
def test_machine_generated_shapes(changes: dict[str, Any], reason: str) -> None:
    assert machine_generated(envelope(**changes), OWN) == reason


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"headers": {"auto-submitted": "no"}},
        {"headers": {"precedence": "normal"}},
        # a person's post as a list distributes it without list fields: the person wrote it
        {"return_path": "owner-talk-l@list.example.org", "headers": {"sender": "Talk <TALK-L@LIST.EXAMPLE.ORG>"}},
        # Outlook sets this header on ordinary mail too: only with an auto-reply subject is it one
        {"headers": {"x-auto-response-suppress": "All"}, "subject": "申报表-张伟"},
        {"subject": "Automatic reply: 【已收到】"},  # a subject alone is not proof
    ],
)
def test_human_mail_is_not_machine_generated(changes: dict[str, Any]) -> None:
    assert machine_generated(envelope(**changes), OWN) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # a bounce of a reply keeps "RE:" in front; a feedback loop names its complaint in the subject
        ({"subject": "RE: Your message to the list awaits approval : non remis (delivery failed)"}, "machine-subject"),
        ({"subject": "Mail Delivery Warning"}, "machine-subject"),
        ({"subject": "Delivery Status"}, "machine-subject"),
        ({"subject": "complaint about message from 192.0.2.1"}, "machine-subject"),
        ({"subject": "系统退信：申报材料"}, "machine-subject"),
        ({"subject": "Re: blah blah (Automatic Response)"}, "machine-subject"),
        ({"subject": "Abwesenheitsnotiz: Antrag"}, "machine-subject"),
        ({"subject": "自动回复: 请问截止时间？"}, "machine-subject"),  # the answered subject asked
        ({"subject": "Réponse automatique : candidature"}, "machine-subject"),
        ({"subject": "Automatyczna odpowiedź: wniosek"}, "machine-subject"),
        # no sender at all: nobody to answer, nobody who wrote
        ({"from_addr": "", "return_path": None, "subject": ""}, "no-sender"),
        # a cloud mail service's event delivered as its JSON document
        (
            {"subject": "AWS Notification Message", "body_text": '{"notificationType":"Bounce","bounce":{}}'},
            "json-notification",
        ),
        (
            {"subject": "Notification", "body_text": '{\n  "Type" : "Notification",\n  "MessageId" : "x"}'},
            "json-notification",
        ),
        # the texts of reports that lack the RFC 3464 / RFC 5965 structure
        ({"subject": "Re: Nyaan", "body_text": "Error: Invalid user address\n550 no such user here"}, "machine-text"),
        (
            {"subject": "Hinweis", "body_text": "This is an advisory-only email.  Please do not reply to it."},
            "machine-text",
        ),
        (
            {"subject": "Re: 申报", "body_text": "    --- The following addresses had delivery problems ---"},
            "machine-text",
        ),
        (
            {"subject": "You are not member (talk ML)", "body_text": "You are not a member of this mailing list."},
            "machine-text",
        ),
        (
            {
                "subject": "RE: 申报",
                "body_text": "This account is protected. Please click the link below to have your address "
                "added to the recipient's allowed list.",
            },
            "machine-text",
        ),
        ({"subject": "通知", "body_text": "此邮件为系统自动发送，请勿直接回复。"}, "machine-text"),
        # RFC 3464 / RFC 5965 report fields written into a plain-text message
        (
            {"subject": "Notice", "body_text": "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1"},
            "machine-text",
        ),
        ({"subject": "Report", "body_text": "Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0"}, "machine-text"),
        ({"subject": "[SpamCop (https://www.spamcop.net/) id:1234]Hello"}, "machine-subject"),
    ],
)
def test_machine_looking_without_a_form(changes: dict[str, Any], reason: str) -> None:
    assert machine_looking(envelope(**changes)) == reason


@pytest.mark.parametrize(
    "changes",
    [
        # a person forwarding a bounce to ask about it is a person
        {"subject": "Fwd: Returned mail: see transcript for details", "body_text": "Could you check this?"},
        {
            "subject": "转发: 退信",
            "body_text": "老师好，我的邮件被退回了\n---------- Forwarded message ----------\nuser unknown",
        },
        # their own words about a failed upload or delivery are not a machine's report
        {"subject": "申报", "body_text": "官网上传一直失败，请问可以邮件提交吗？"},
        {"subject": "关于邮件投递失败的咨询", "body_text": "老师好，我上周的邮件是否收到了？"},
        {"subject": "为什么只收到自动回复", "body_text": "老师好，我的申报表是否已登记？"},
        {"subject": "Delivery failed?", "body_text": "Did my application arrive?"},
        {"subject": "申报", "body_text": "我之前的邮件无法投递到贵方邮箱，请问现在可以收到吗？"},
        {"subject": "Re: 申报", "body_text": "My mail came back with user unknown. 请问这个地址对吗？"},
        {"subject": "Question", "body_text": "Is the deadline on 8 September?"},
        {"subject": "申报", "body_text": "Action: 我会在截止前补交签字页。\nStatus: 已完成"},
        # a report quoted below a person's reply is not their words
        {"subject": "Re: 申报", "body_text": "收到，谢谢\n\n> This message could not be delivered"},
    ],
)
def test_people_do_not_look_like_machines(changes: dict[str, Any]) -> None:
    assert machine_looking(envelope(**changes)) is None


# ---------------------------------------------------------------------------- replies


def test_reply_subjects() -> None:
    for subject in (
        "Re: 申报",
        "RE: x",
        "回复：【已收到】",
        "答复: 【已收到】",
        "回复: x",
        "Re[2]: x",
        "AW: x",
    ):
        assert is_reply_subject(subject), subject
    for subject in ("Fw: 申报", "Fwd: 申报", "转发: 申报", "申报 Re", "Report"):
        assert not is_reply_subject(subject), subject


def test_replies_to_us_by_header() -> None:
    ours = {"<ack.SMP24-0003.bd2eb831da@aminer.cn>"}
    env = envelope(subject="你好", in_reply_to=("<ack.SMP24-0003.bd2eb831da@aminer.cn>",))
    assert replies_to_us(env, ours, ("SMP24",)) == "in-reply-to-ours"
    env = envelope(subject="你好", references=("<x@y>", "<ack.SMP24-0003.bd2eb831da@aminer.cn>"))
    assert replies_to_us(env, ours, ("SMP24",)) == "references-ours"
    env = envelope(subject="你好", in_reply_to=("<someone-else@y>",))
    assert replies_to_us(env, ours, ("SMP24",)) is None


def test_replies_to_us_by_subject() -> None:
    never: set[str] = set()
    env = envelope(subject="答复: " + ACK_SUBJECT)
    assert replies_to_us(env, never, ("SMP24",)) == "reply-to-acknowledgement-subject"
    env = envelope(subject="Re: 关于 SMP24-0042 的经费")
    assert replies_to_us(env, never, ("SMP24",)) == "reply-subject-reference"
    # another call's reference, a forward, or a fresh subject quoting the reference are not replies
    assert replies_to_us(envelope(subject="Re: ANT24-0042"), never, ("SMP24",)) is None
    assert replies_to_us(envelope(subject="Fw: " + ACK_SUBJECT), never, ("SMP24",)) is None
    assert replies_to_us(envelope(subject="Re: XSMP24-0042"), never, ("SMP24",)) is None


# ---------------------------------------------------------------------------- intent


def test_fresh_text_drops_quoted_mail() -> None:
    body = "收到，谢谢老师！\n\n韩芳\n\n" + QUOTED_ACK
    assert fresh_text(body).strip() == "收到，谢谢老师！\n\n韩芳"
    assert fresh_text("ok\n> 附件是申报表\nthanks").split() == ["ok", "thanks"]
    assert fresh_text("好的\nOn Mon, 1 Jan 2024, Fund <a@b> wrote:\n附件").strip() == "好的"
    assert fresh_text("好的\n------------------ 原始邮件 ------------------\n附件").strip() == "好的"


@pytest.mark.parametrize(
    ("body", "fresh"),
    [
        # Gmail wraps its attribution; in Chinese it starts with the name
        ("Thanks!\n\nOn Wed, Aug 21, 2024 at 4:12 PM SMP Fund <\nmin.gao@aminer.cn> wrote:\n\n> 附件", "Thanks!"),
        ("谢谢！\n\nSMP基金 <min.gao@aminer.cn> 于2024年8月21日周三 16:12写道：\n\n> 请附上", "谢谢！"),
        # new text right above an attribution is not part of it
        ("附上申报表。\n在 2024年8月21日，16:12，SMP <min.gao@aminer.cn> 写道：\n> 见附件", "附上申报表。"),
        # Outlook's separators, and signatures (RFC 3676 "-- ", mobile clients)
        ("好的\n-----Original Message-----\n请附上", "好的"),
        ("好的\n-----邮件原件-----\n请附上", "好的"),
        ("好的\n------------------ Original ------------------\n见附件", "好的"),
        ("好的\n-- \n张伟\n附件：无", "好的"),
        ("好的\n\n发自我的iPhone\n\n附件", "好的"),
        # a bottom-posted reply below ">" quoting is kept
        ("On Wed, 21 Aug 2024, SMP <a@b> wrote:\n> 请附上修改后的申报表\n\n附上了，请查收", "附上了，请查收"),
        # a sentence of new text that only mentions a date is not an attribution
        ("我于2024年8月21日提交了申报表。\n谢谢", "我于2024年8月21日提交了申报表。\n谢谢"),
    ],
)
def test_fresh_text_of_common_clients(body: str, fresh: str) -> None:
    assert fresh_text(body).strip() == fresh


@pytest.mark.parametrize(
    ("body", "replying", "expected"),
    [
        ("之前发的申报表是最终版。", False, False),  # about a file already sent
        ("我已经发过申报表了，请以之前那份为准。", False, False),
        ("The form I sent yesterday is final.", False, False),
        ("附上之前漏掉的申报表。", False, True),  # "之前" without a sending verb: the file goes now
        ("申报表是最终版。", True, False),  # naming the form in a reply is talking about it
        ("申报表是最终版。", False, True),  # in a new message it is a submission without the file
        ("修改后的申报表见附件，之前发的作废。", True, True),  # clause by clause
        ("Please find attached the corrected form.", True, True),
    ],
)
def test_submission_intent_reads_what_is_sent_now(body: str, replying: bool, expected: bool) -> None:
    env = envelope(subject="Re: 申报" if replying else "申报", body_text=body)
    assert mentions_submission(env, replying=replying) is expected


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (
            "官网申报失败，邮件提交Proposal-吕婉婷",
            "现提交CAAI-蚂蚁科研基金（大模型专项）申报材料，详见附件。",
        ),
        ("申报", "附件是我的申报表，请查收。"),
        ("申报-刘一鸣", "链接: https://pan.baidu.com/s/1pAbS5 提取码: 7wvn"),
        ("application", "Please find attached my application form."),
        ("王思琪-西北工业大学-SMP智谱基金申报表", ""),
        ("申报", "申报材料已上传到网盘，请问这样可以吗？"),  # a link wins over the question
        ("申报", "申报表见附件。请问格式可以吗？"),  # so does "see the attachment" said outside the question
        ("申报", "https://drive.google.com/file/d/abc"),
    ],
)
def test_mentions_submission(subject: str, body: str) -> None:
    assert mentions_submission(envelope(subject=subject, body_text=body))


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (
            "关于CAAI-蚂蚁科研基金（大模型专项）的咨询",
            "请问官网申报系统一直无法上传附件，邮件提交是否同样有效？",
        ),
        ("请教一个申报问题", "请问第一期已结项的项目负责人申报第二期时需要额外提交材料吗？"),
        ("答复: " + ACK_SUBJECT, "收到，谢谢老师！\n\n" + QUOTED_ACK),  # the quoted acknowledgement is ours
        ("RE: " + ACK_SUBJECT, "收到，谢谢！想再确认一下：请问是否可以与企业联合申报？\n\n" + QUOTED_ACK),
        ("你好", "谢谢"),
        ("简历", "请问可以附上简历吗？"),  # "附上" inside a question is not a submission
    ],
)
def test_no_submission_intent(subject: str, body: str) -> None:
    assert not mentions_submission(envelope(subject=subject, body_text=body))


def test_cloud_link_and_question() -> None:
    assert cloud_link(envelope(body_text="链接: https://pan.baidu.com/s/1 提取码: abcd"))
    assert not cloud_link(envelope(body_text="附件是申报表"))
    assert is_question(envelope(body_text="请问截止时间？"))
    assert not is_question(envelope(subject="Re: 请问", body_text="好的，谢谢"))


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        ("SMP-智谱AI大模型交叉学科基金第二期申报-潘建华-修改版", "", True),
        ("更新：SMP-智谱基金申报-张静-中山大学", "", True),
        ("申报表", "之前提交的申报表中手机号有误，请以此版本为准。", True),
        ("Re: 申报", "附件为更新后的版本，请以最新版本为准。", True),
        ("Proposal", "Please use this revised version instead.", True),
        ("申报", "课题组还有一个方向也想申报，附件为第二份申报表，请查收。", False),
        ("答复: " + ACK_SUBJECT, "收到\n" + QUOTED_ACK, False),  # "有误" in our own quoted words
    ],
)
def test_says_it_replaces(subject: str, body: str, expected: bool) -> None:
    assert says_it_replaces(envelope(subject=subject, body_text=body)) is expected


# ---------------------------------------------------------------------------- damaged header blocks

BOUNCE_HEADERS = (
    b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
    b"To: min.gao@aminer.cn\r\nSubject: Undeliverable\r\nMessage-ID: <b1@mx.example.org>\r\n\r\n"
    b"Delivery has failed to these recipients.\r\n"
)


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n" + BOUNCE_HEADERS,  # an empty line in front of the header fields
        b"\n" + b" " * 200 + b"\n" + BOUNCE_HEADERS.replace(b"\r\n", b"\n"),  # and a line of spaces
        BOUNCE_HEADERS.replace(b"\r\n", b"\r"),  # bare CR line ends (classic Mac OS)
    ],
)
def test_damaged_header_blocks_still_show_the_machine(raw: bytes) -> None:
    settings = load_settings(Path(__file__).resolve().parent.parent / "config.example.toml")
    env = read_message(raw, settings.call[0].form_spec).envelope
    assert env.from_addr == "mailer-daemon@mx.example.org"
    assert machine_generated(env, OWN) == "null-return-path"
