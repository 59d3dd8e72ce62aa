"""What kind of message this is, from its envelope alone: machine-made, a reply to the fund, a submission.

Everything here reads an :class:`~parsers.model.Envelope` and returns a short reason code (for the
decision record) or a yes/no; nothing is looked up elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from parsers.model import Envelope

# ---------------------------------------------------------------------------------------------- machine mail

BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
MAILER_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
REPORT_TYPES = frozenset({"delivery-status", "disposition-notification", "feedback-report"})

_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic\s+reply|auto[\s-]?reply|autoreply|out\s+of(\s+the)?\s+office|自动回复|自动答复|自動回覆"
    r"|自動回復|自動答覆|auto\s*:|休假自动回复)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver(ed|able)|delivery\s+((status\s+)?notification|failure|has\s+failed)|returned\s+mail"
    r"|mail\s+delivery\s+failed|failure\s+notice|退信|系统退信|邮件投递失败)",
    re.IGNORECASE,
)


def _local_part(address: str | None) -> str:
    return (address or "").strip("<> ").rsplit("@", 1)[0].lower()


def looks_machine_subject(subject: str) -> bool:
    """An out-of-office or bounce subject: alone not proof, but enough for a message without a form."""
    return bool(_AUTO_REPLY_SUBJECT.match(subject) or _BOUNCE_SUBJECT.match(subject))


def machine_generated(env: Envelope, own_addresses: frozenset[str]) -> str | None:
    """Why this message was written by a machine and must never be answered, or None for a person's mail."""
    headers = {name.lower(): value.strip() for name, value in env.headers.items()}
    auto_submitted = headers.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"auto-submitted:{auto_submitted}"
    for header in ("x-autoreply", "x-autorespond", "x-autoresponse", "x-autoresponder"):
        if header in headers:
            return header
    precedence = (headers.get("precedence") or headers.get("x-precedence") or "").lower()
    if precedence in BULK_PRECEDENCE:
        return f"precedence:{precedence}"
    for header in ("list-id", "list-unsubscribe"):
        if header in headers:
            return header
    if env.content_type == "multipart/report":
        report = (env.report_type or "").lower()
        return f"report:{report}" if report in REPORT_TYPES else "report"
    if env.return_path == "":
        return "null-return-path"
    if _local_part(env.return_path) in MAILER_DAEMONS or _local_part(env.from_addr) in MAILER_DAEMONS:
        return "mailer-daemon"
    if "x-failed-recipients" in headers:
        return "x-failed-recipients"
    if "x-auto-response-suppress" in headers and _AUTO_REPLY_SUBJECT.match(env.subject):
        return "exchange-auto-reply"
    if env.from_addr.strip().lower() in own_addresses:
        return "own-address"
    return None


# ---------------------------------------------------------------------------------------------- replies

_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw)(\[\d+\])?\s*[:：]|(回复|答复|回覆|答覆)\s*[:：]?)", re.IGNORECASE)
ACKNOWLEDGEMENT_MARK = "【已收到】"


def is_reply_subject(subject: str) -> bool:
    """Re: / RE: / 回复： / 答复: … (a forward, Fw: / 转发, is not a reply)."""
    return _REPLY_PREFIX.match(subject) is not None


def reference_pattern(prefixes: Sequence[str]) -> re.Pattern[str]:
    """The fund's application references, e.g. SMP24-0042."""
    alternatives = "|".join(re.escape(p) for p in prefixes if p) or r"(?!)"
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})-\d{{3,6}}(?!\d)")


def replies_to_us(
    env: Envelope, is_our_message_id: Callable[[str], bool], reference_prefixes: Sequence[str]
) -> str | None:
    """Why this message answers one of the fund's own messages, or None."""
    if any(is_our_message_id(mid) for mid in env.in_reply_to):
        return "in-reply-to-ours"
    if any(is_our_message_id(mid) for mid in env.references):
        return "references-ours"
    if is_reply_subject(env.subject):
        if ACKNOWLEDGEMENT_MARK in env.subject:
            return "reply-to-acknowledgement-subject"
        if reference_pattern(reference_prefixes).search(env.subject):
            return "reply-subject-reference"
    return None


# ---------------------------------------------------------------------------------------------- body text

_QUOTE_START = re.compile(
    r"^\s*(-{2,}\s*(original message|原始邮件|forwarded message|转发邮件|回复的原邮件)"
    r"|(发件人|寄件者|from)\s*[:：]"
    r"|on\s.+\swrote\s*:\s*$"
    r"|(在|于).{4,80}写道\s*[:：]\s*$"
    r"|_{10,}\s*$)",
    re.IGNORECASE,
)


def fresh_text(body: str) -> str:
    """The part of a body the sender wrote now: quoted earlier mail (ours included) cut off."""
    kept: list[str] = []
    for line in body.splitlines():
        if _QUOTE_START.match(line):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return "\n".join(kept)


_CLOUD_LINK = re.compile(
    r"pan\.baidu\.com|yun\.baidu\.com|网盘|云盘|提取码|超大附件|drive\.google|docs\.google|dropbox\.com"
    r"|onedrive|1drv\.ms|sharepoint\.com|weiyun|wetransfer|aliyundrive|alipan\.com|pan\.quark|kdocs\.cn"
    r"|docs\.qq\.com|mail\.qq\.com/cgi-bin/ftnExs|mail\.163\.com/large",
    re.IGNORECASE,
)
_SUBMITTING = re.compile(
    r"见附件|附件[是为中里内有包含]|附件请|请查收|随信附|随邮件附|已附上|附上|附件已|现提交|现将|特此提交|提交.{0,12}(申报|申请)"
    r"|please\s+find|attached|enclosed|see\s+(the\s+)?attachment|in\s+the\s+attachment|herewith",
    re.IGNORECASE,
)
_SUBMISSION_WORDS = re.compile(
    r"附件|申报表|申请书|申报书|申报材料|申请材料|proposal|application\s+form|attachment", re.IGNORECASE
)
_QUESTION = re.compile(r"[?？]|请问|咨询|想问|问一下|请教|能否|可否|是否可以|是否需要|是否有效")
_REPLACES = re.compile(
    r"更新|修改|修订|替换|代替|取代|以此为准|为准|最新版|最终版|终版|更正|改正|纠正|重新发送|重新提交|重发"
    r"|updated?|revis(ed|ion)|replac(e|es|ing|ement)|supersede|correct(ed|ion)|new\s+version|final\s+version",
    re.IGNORECASE,
)


def cloud_link(env: Envelope) -> bool:
    """The sender shares the files through a cloud drive instead of attaching them."""
    return _CLOUD_LINK.search(fresh_text(env.body_text)) is not None


def is_question(env: Envelope) -> bool:
    return _QUESTION.search(_own_words(env)) is not None


def _own_words(env: Envelope) -> str:
    """Subject and fresh body; a reply's subject is the fund's own words and is left out."""
    subject = "" if is_reply_subject(env.subject) else env.subject
    return f"{subject}\n{fresh_text(env.body_text)}"


_SENTENCE_END = re.compile(r"(?<=[。！!？?\n；;])")


def mentions_submission(env: Envelope) -> bool:
    """For a message without a form: did the sender mean to submit (rather than ask or thank)?

    A cloud-drive link, or "see the attachment" said outside a question, is a submission attempt even
    beside a question ("材料见附件，请问格式可以吗？"); otherwise any question makes the message
    correspondence, and merely naming the form ("申报表-张伟") is a submission.
    """
    words = _own_words(env)
    if _CLOUD_LINK.search(words):
        return True
    sentences = _SENTENCE_END.split(words)
    if any(_SUBMITTING.search(s) and not _QUESTION.search(s) for s in sentences):
        return True
    if _QUESTION.search(words):
        return False
    return _SUBMISSION_WORDS.search(words) is not None


def says_it_replaces(env: Envelope) -> bool:
    """The sender says this form replaces an earlier one (更新 / 修改版 / 以此为准 / updated …)."""
    return _REPLACES.search(_own_words(env)) is not None
