"""Replies that quote our answer: intent is read from the new text alone, as a person would read it.

The quoted answer is the real one (composed by the bot), quoted the way each common client does it
(Outlook, QQ/Foxmail, Apple Mail, Gmail, NetEase, plain ">"), in plain text or HTML and in the
charsets Chinese clients use; each message goes through the reader and the decision as in the
pipeline. A reply without a form is correspondence and never answered, unless its new text says a
file is being sent now and none is there (no_attachment).
"""

from __future__ import annotations

import email
import email.policy
import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbot.acknowledge import compose_acknowledgement
from mailbot.config import load_settings
from mailbot.decide import decide
from mailbot.decision import CallRules, Outcome
from mailbot.embedded import SmtpSink
from mailbot.export import export_records
from mailbot.worker import Worker
from parsers.message import read_message
from parsers.mime import html_to_text
from tests.conftest import ImapServer, make_settings
from tests.test_acknowledge import NOW, TEMPLATES, context

REPO = Path(__file__).resolve().parent.parent
SETTINGS = load_settings(REPO / "config.example.toml")
SMP = SETTINGS.call_by_id("smp-zhipu-2024")
RULES = CallRules.from_settings(SMP, SETTINGS.own_addresses)
ARRIVAL = datetime(2024, 8, 22, 9, 0, tzinfo=UTC)
APPLICANT = "zhangwei@pku.edu.cn"


def our_answer(outcome: str = "accepted") -> tuple[str, str, str]:
    """Message-ID, subject and plain text of a real answer of the bot."""
    ctx = context(outcome=outcome, reply_to=APPLICANT)
    parsed = email.message_from_bytes(bytes(compose_acknowledgement(ctx, TEMPLATES, NOW)), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert body is not None
    return str(parsed["Message-ID"]), str(parsed["Subject"]), body.get_content().replace("\r\n", "\n")


ANSWER_ID, ANSWER_SUBJECT, ANSWER_TEXT = our_answer()


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


# Each style: (plain text of the quote block, whether its lines carry ">")
def outlook_zh(subject: str, text: str) -> str:
    return (
        f"发件人: SMP-智谱基金 <min.gao@aminer.cn>\n发送时间: 2024年8月21日 16:12\n"
        f"收件人: 张伟 <{APPLICANT}>\n主题: {subject}\n\n{text}"
    )


def outlook_en(subject: str, text: str) -> str:
    return (
        "________________________________\nFrom: SMP-智谱基金 <min.gao@aminer.cn>\n"
        f"Sent: Wednesday, August 21, 2024 4:12 PM\nTo: 张伟 <{APPLICANT}>\nSubject: {subject}\n\n{text}"
    )


def outlook_original(subject: str, text: str) -> str:
    return f"-----邮件原件-----\n发件人: min.gao@aminer.cn\n主题: {subject}\n\n{text}"


def qq(subject: str, text: str) -> str:
    return (
        '------------------ 原始邮件 ------------------\n发件人: "SMP-智谱基金"<min.gao@aminer.cn>;\n'
        f'发送时间: 2024年8月21日(星期三) 下午4:12\n收件人: "张伟"<{APPLICANT}>;\n主题: {subject}\n\n{text}'
    )


def foxmail_en(subject: str, text: str) -> str:
    return (
        '------------------ Original ------------------\nFrom: "SMP"<min.gao@aminer.cn>;\n'
        f"Date: Wed, Aug 21, 2024 04:12 PM\nSubject: {subject}\n\n{text}"
    )


def apple_zh(subject: str, text: str) -> str:
    return f"在 2024年8月21日，16:12，SMP-智谱基金 <min.gao@aminer.cn> 写道：\n\n{_quoted(text)}"


def gmail_en(subject: str, text: str) -> str:
    # Gmail wraps the attribution at 78 columns
    attribution = "On Wed, Aug 21, 2024 at 4:12 PM SMP-智谱 AI 大模型交叉学科基金 <\nmin.gao@aminer.cn> wrote:"
    return f"{attribution}\n\n{_quoted(text)}"


def gmail_zh(subject: str, text: str) -> str:
    return f"SMP-智谱基金 <min.gao@aminer.cn> 于2024年8月21日周三 16:12写道：\n\n{_quoted(text)}"


def netease(subject: str, text: str) -> str:
    return f'在 2024-08-21 16:12:00，"SMP-智谱基金" <min.gao@aminer.cn> 写道：\n{_quoted(text)}'


def bare_quote(subject: str, text: str) -> str:
    return _quoted(text)


def unmarked(subject: str, text: str) -> str:
    """Our answer pasted below without any quoting marker (a client that sends only the raw text)."""
    return text


QUOTE_STYLES: dict[str, Callable[[str, str], str]] = {
    "outlook-zh": outlook_zh,
    "outlook-en": outlook_en,
    "outlook-original": outlook_original,
    "qq": qq,
    "foxmail-en": foxmail_en,
    "apple-zh": apple_zh,
    "gmail-en": gmail_en,
    "gmail-zh": gmail_zh,
    "netease": netease,
    "bare-quote": bare_quote,
    "unmarked": unmarked,
}
SIGNATURES = ("", "\n\n张伟\n北京大学计算机学院", "\n\n-- \n张伟 | 北京大学\n电话 13812345678", "\n\n发自我的iPhone")

# new text: the writer confirms, thanks or asks about the file already sent → correspondence
TALKING = (
    "收到，谢谢老师！",
    "好的，谢谢。",
    "之前发的申报表有问题吗？",
    "我发的申报表是最终版本，不用再改了。",
    "申报表已经发过了，请以之前那份为准。",
    "请问申报表里的经费一栏需要盖章吗？",
    "Thanks, the form I sent is the final version.",
    "Received, thank you very much.",
    "Could you confirm that my proposal was complete?",
)
# new text: the writer sends a file now (and forgot it) → no_attachment
SENDING = (
    "附上修改后的申报表，请查收。",
    "修改后的申报表见附件。",
    "现提交修改后的申报材料，详见附件。",
    "Please find attached the corrected form.",
    "老师您好，手机号填错了，附件是更正后的申报表。",
)


def reply_bytes(
    new_text: str,
    style: str,
    *,
    signature: str = "",
    charset: str = "utf-8",
    as_html: bool = False,
    threaded: bool = True,
    prefix: str = "回复：",
) -> bytes:
    """A reply to our answer that quotes it in ``style``, without any attachment."""
    quote = QUOTE_STYLES[style](ANSWER_SUBJECT, ANSWER_TEXT)
    plain = f"{new_text}{signature}\n\n{quote}\n"
    message = EmailMessage()
    message["From"] = f"张伟 <{APPLICANT}>"
    message["To"] = "min.gao@aminer.cn"
    message["Subject"] = prefix + ANSWER_SUBJECT
    message["Date"] = format_datetime(ARRIVAL - timedelta(minutes=1))
    message["Message-ID"] = "<reply.1@pku.edu.cn>"
    if threaded:
        message["In-Reply-To"] = ANSWER_ID
        message["References"] = ANSWER_ID
    if as_html:
        message.set_content(_as_html(new_text + signature, quote), subtype="html", charset=charset)
    else:
        message.set_content(plain, charset=charset)
    return message.as_bytes()


def _as_html(new_text: str, quote: str) -> str:
    """The HTML a client writes: new text in divs, the quote in a blockquote (its ">" become markup)."""
    lines = quote.splitlines()
    cited = [line for line in lines if line.startswith(">")]
    header = [line for line in lines if not line.startswith(">")]
    body = "".join(f"<div>{html.escape(line)}</div>" for line in new_text.splitlines())
    if cited:
        attribution = "<br>".join(html.escape(line) for line in header if line.strip())
        inner = "<br>".join(html.escape(line.lstrip("> ")) for line in cited)
        quoted = f'<div class="quote_attr">{attribution}</div><blockquote type="cite">{inner}</blockquote>'
    else:
        quoted = "<hr>" + "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    return f"<html><body>{body}<br>{quoted}</body></html>"


def outcome_of(raw: bytes) -> Outcome:
    submission = read_message(raw, SMP.form_spec)
    decision = decide(submission, "reply", ARRIVAL, RULES, (), frozenset({ANSWER_ID}))
    return decision.outcome


@pytest.mark.parametrize("style", sorted(QUOTE_STYLES))
@pytest.mark.parametrize(
    ("new_text", "expected"),
    [(text, Outcome.CORRESPONDENCE) for text in TALKING] + [(text, Outcome.NO_ATTACHMENT) for text in SENDING],
)
def test_reply_intent_in_every_quote_style(style: str, new_text: str, expected: Outcome) -> None:
    assert outcome_of(reply_bytes(new_text, style)) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    talking=st.booleans(),
    pick=st.integers(min_value=0, max_value=100),
    style=st.sampled_from(sorted(QUOTE_STYLES)),
    signature=st.sampled_from(SIGNATURES),
    charset=st.sampled_from(("utf-8", "gb18030", "gbk")),
    as_html=st.booleans(),
    threaded=st.booleans(),
    prefix=st.sampled_from(("回复：", "回复: ", "Re: ", "RE: ", "答复: ", "Re：")),
)
def test_reply_intent_across_clients(
    talking: bool,
    pick: int,
    style: str,
    signature: str,
    charset: str,
    as_html: bool,
    threaded: bool,
    prefix: str,
) -> None:
    texts = TALKING if talking else SENDING
    new_text = texts[pick % len(texts)]
    raw = reply_bytes(
        new_text, style, signature=signature, charset=charset, as_html=as_html, threaded=threaded, prefix=prefix
    )
    assert outcome_of(raw) == (Outcome.CORRESPONDENCE if talking else Outcome.NO_ATTACHMENT)


def test_a_reply_to_any_of_our_answers_is_recognised_by_its_subject_alone() -> None:
    for outcome in ("accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable"):
        _, subject, text = our_answer(outcome)
        message = EmailMessage()
        message["From"] = APPLICANT
        message["To"] = "min.gao@aminer.cn"
        message["Subject"] = "回复：" + subject
        message.set_content("好的，谢谢！\n\n" + outlook_zh(subject, text))
        decision = decide(read_message(message.as_bytes(), SMP.form_spec), "r", ARRIVAL, RULES, (), frozenset())
        assert (decision.outcome, decision.rule) == (Outcome.CORRESPONDENCE, "reply-to-us"), outcome


def test_our_own_words_never_read_as_a_machine() -> None:
    """A reply quoting our answer in a style not recognised must still not look machine-made."""
    for outcome in ("accepted", "incomplete", "late", "revision", "duplicate", "no_attachment", "unreadable"):
        _, subject, text = our_answer(outcome)
        message = EmailMessage()
        message["From"] = APPLICANT
        message["To"] = "min.gao@aminer.cn"
        message["Subject"] = "Re: " + subject
        message.set_content("谢谢\n\n" + text)  # quoted without any marker
        decision = decide(read_message(message.as_bytes(), SMP.form_spec), "r", ARRIVAL, RULES, (), frozenset())
        assert decision.outcome != Outcome.IGNORED, (outcome, decision.rule)


# ---------------------------------------------------------------------------------------------- end to end


def test_replies_to_our_answer_through_real_servers(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    """A thank-you that quotes our answer is not answered again; "附上…" without a file is."""
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    first = EmailMessage()
    first["From"] = f"张伟 <{APPLICANT}>"
    first["To"] = "min.gao@aminer.cn"
    first["Subject"] = "SMP-智谱基金申报-张伟"
    first["Message-ID"] = "<first.1@pku.edu.cn>"
    first["Date"] = format_datetime(ARRIVAL)
    first.set_content("老师好，申报表忘了附，稍后补发。")
    imap_server.append("min.gao@aminer.cn", first.as_bytes(), ARRIVAL)
    with Worker(settings) as bot:
        bot.single_pass()
    assert len(smtp_sink.received) == 1, "the first message gets its one answer"
    answer = email.message_from_bytes(smtp_sink.received[0].raw, policy=email.policy.default)
    assert isinstance(answer, EmailMessage)
    answer_body = answer.get_body(("plain",))
    assert answer_body is not None
    answer_text = answer_body.get_content().replace("\r\n", "\n")

    def reply(new_text: str, message_id: str, minutes: int) -> None:
        message = EmailMessage()
        message["From"] = f"张伟 <{APPLICANT}>"
        message["To"] = "min.gao@aminer.cn"
        message["Subject"] = "回复：" + str(answer["Subject"])
        message["Message-ID"] = message_id
        message["In-Reply-To"] = str(answer["Message-ID"])
        message["References"] = str(answer["Message-ID"])
        message["Date"] = format_datetime(ARRIVAL + timedelta(minutes=minutes))
        message.set_content(f"{new_text}\n\n{qq(str(answer['Subject']), answer_text)}\n", charset="gb18030")
        imap_server.append("min.gao@aminer.cn", message.as_bytes(), ARRIVAL + timedelta(minutes=minutes))

    reply("收到，我之前发的申报表是最终版本，谢谢老师！", "<thanks.1@pku.edu.cn>", 10)
    reply("附上修改后的申报表，请查收。", "<sending.1@pku.edu.cn>", 20)
    with Worker(settings) as bot:
        bot.single_pass()
        with bot.store.sessions() as session:
            outcomes = {r["message_id"]: r["outcome"] for r in export_records(session)}
    assert outcomes["<thanks.1@pku.edu.cn>"] == "correspondence"
    assert outcomes["<sending.1@pku.edu.cn>"] == "no_attachment"
    answered = [email.message_from_bytes(m.raw).get("In-Reply-To", "") for m in smtp_sink.received]
    assert "<thanks.1@pku.edu.cn>" not in answered, "a thank-you is never answered again"
    assert answered.count("<sending.1@pku.edu.cn>") == 1


def test_html_quotes_are_marked_like_plain_text_quotes() -> None:
    html_body = (
        "<div>好的，谢谢</div><blockquote type='cite'><div>请附上修改后的申报表</div>"
        "<blockquote>见附件</blockquote></blockquote>"
    )
    assert html_to_text(html_body).splitlines() == ["好的，谢谢", "", "> 请附上修改后的申报表", "", "> > 见附件"]
