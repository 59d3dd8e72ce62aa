"""What kind of message this is, from its envelope alone: machine-made, a reply to the fund, a submission.

Everything here reads an :class:`~parsers.model.Envelope` and returns a short reason code (for the
decision record) or a yes/no; nothing is looked up elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from parsers.headers import LIST_HEADERS
from parsers.model import Envelope

# ---------------------------------------------------------------------------------------------- machine mail

BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
REPORT_TYPES = frozenset({"delivery-status", "disposition-notification", "feedback-report"})
# Mailboxes that by convention send without reading answers: RFC 5321 §4.5.1 postmaster, the
# MTA's MAILER-DAEMON, and the no-reply family (no-reply, noreply, do_not_reply, dmarc-noreply …).
# Compared with "-", "_" and "." removed and a "+tag" cut off, so post_master and no.reply count.
MACHINE_MAILBOXES = frozenset({"mailerdaemon", "postmaster"})
NO_REPLY_MARKS = ("noreply", "donotreply", "dontreply")

# Out-of-office subjects of the common clients and servers, in the languages they ship: opening the
# subject ("Automatic reply: …", "自动回复：…") or in brackets after it ("Re: … (Automatic Response)").
# Anywhere else the words are a person's ("为什么只收到自动回复？").
_AUTO_REPLY_WORDS = (
    r"automatic\s+(reply|response)|auto[\s-]?reply|autoreply|auto[\s-]?response|out\s+of(\s+the)?\s+office"
    r"|自动回复|自动答复|自動回覆|自動回復|自動答覆|自動応答|abwesenheitsnotiz|automatische\s+antwort"
    r"|r[ée]ponse\s+automatique|respuesta\s+autom[áa]tica|risposta\s+automatica|resposta\s+autom[áa]tica"
    r"|automatisch\s+antwoord|autosvar|automatyczna\s+odpowied|odpowied[źz]\s+automatyczna"
)
_AUTO_REPLY_SUBJECT = re.compile(
    rf"^\s*(auto\s*:|休假自动回复|{_AUTO_REPLY_WORDS})|[(\[（【]\s*({_AUTO_REPLY_WORDS})",
    re.IGNORECASE,
)
# The subjects MTAs and feedback loops give their reports. The English ones are searched anywhere,
# since a bounce of a reply keeps the reply's "RE: …" in front ("RE: … : non remis (delivery
# failed)"); the Chinese and Japanese ones open the subject ("系统退信", "メールエラー通知"), so an
# applicant's "关于邮件投递失败的咨询" stays theirs. A question is never a report's subject.
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(ed|able)|non-?deliver(y|able)|delivery\s+(status|notification|failure|failed|has\s+failed"
    r"|warning|delay(ed)?|problem|report)|returned\s+mail|mail\s+delivery\s+(failed|failure|problem|system)"
    r"|failure\s+notice|warning:\s+could\s+not\s+send|could\s+not\s+be\s+delivered"
    r"|complaint\s+about\s+message|abuse\s+(report|complaint)|spam\s+report|spamcop|(e-?mail\s+)?feedback\s+report"
    r"|^\s*(系统退信|退信|邮件投递失败|投递失败|无法投递|未能送达|無法傳遞|メールエラー)",
    re.IGNORECASE,
)
# a person's question in their own words ("请问……？"): reports state, they do not ask
_PERSONS_QUESTION = re.compile(r"[?？]\s*$|请问|？")
# What the common MTAs, feedback loops and challenge-response systems write in the body of a
# report that lacks the RFC 3464 / RFC 5965 structure (Postfix, Exim, Sendmail, qmail, Exchange,
# Notes; Hotmail JMRP; Bluebottle, Boxbe, SpamArrest …), and the "do not reply" notice of
# automatic senders. Read only in the sender's own text (quoted and forwarded mail cut off), and
# never words of the fund's own answers ("sent automatically"), which a reply may quote unmarked.
_MACHINE_BODY = re.compile(
    r"could\s+not\s+be\s+delivered|couldn'?t\s+be\s+delivered|was\s+not\s+delivered\s+to"
    r"|delivery\s+(to\s+the\s+following\s+recipients?|has\s+failed|of\s+(your\s+)?e?-?mail\s+to"
    r"|status\s+notification|problems)"
    r"|following\s+(addresses|recipients?)\s+(had|failed|could)|permanent\s+fatal\s+errors?"
    r"|undeliverable\s+(mail|message)|message\s+(could\s+not|cannot|can't)\s+be\s+delivered"
    r"|this\s+is\s+the\s+(mail\s+system|qmail-send\s+program)|created\s+automatically\s+by\s+mail\s+delivery"
    r"|mail\s+delivery\s+(software|subsystem|system)|returned\s+to\s+sender|user\s+unknown|no\s+such\s+user"
    r"|mailbox\s+(is\s+)?(full|unavailable|not\s+found)|will\s+(continue\s+to\s+)?(try|retry)\s+to\s+deliver"
    r"|advisory-only|(automatically|auto-?)\s*generated\s+(e-?mail|message|notification)"
    r"|(please\s+)?do\s+not\s+(reply|respond)\s+to\s+this"
    r"|not\s+a\s+member\s+of\s+this\s+(mailing\s+)?list|(approved|allowed|safe)\s+senders?'?\s+list"
    r"|(verify|confirm)\s+(that\s+)?you\s+are\s+(a\s+)?(human|real\s+person|not\s+a\s+(robot|spammer))"
    r"|(have|get)\s+your\s+(e-?mail\s+)?(address\s+)?(added|approved)|whitelist|challenge[-\s]response"
    r"|account\s+is\s+protected\s+by|sender\s+verification|verify\s+your\s+(e-?mail|address)"
    r"|complaint\s+(about|regarding)\s+(a\s+)?message|feedback\s+loop|abuse\s+(report|complaint)|spam\s+report"
    r"|系统退信|退信原因|无法投递到|投递失败原因|请勿(直接)?回复"
    r"|送信できませんでした|返信いただけません|配信できませんでした"
    # the fields of an RFC 3464 delivery report or an RFC 5965 feedback report written into the text
    r"|^\s*(final-recipient|original-recipient|reporting-mta|remote-mta|diagnostic-code)\s*:\s*\S"
    r"|^\s*action\s*:\s*(failed|delayed|delivered|relayed|expanded)\b"
    r"|^\s*feedback-type\s*:\s*(abuse|fraud|virus|other|not-spam|auth-failure)\b",
    re.IGNORECASE | re.MULTILINE,
)
# A cloud mail service's event notification delivered as mail: the body is its JSON document
# (Amazon SES through SNS: {"notificationType":"Bounce", …}; SNS's own {"Type":"Notification", …}).
_JSON_NOTIFICATION = re.compile(
    r'^\s*\{.{0,400}"(notificationType|eventType|Type)"\s*:\s*"(Bounce|Complaint|Delivery|DeliveryDelay|Reject'
    r'|Notification|Send|Open|Click|RenderingFailure)"',
    re.DOTALL,
)
_FORWARD_SUBJECT = re.compile(r"^\s*(fw|fwd|转发|轉寄|tr|wg|rv)\s*[:：]", re.IGNORECASE)


def _local_part(address: str | None) -> str:
    """The mailbox name, lower case: what precedes the domain's "@", without quotes and backslashes."""
    text = (address or "").strip("<> ").replace("\\", "").replace('"', "").lower()
    return text.split("@", 1)[0] if "@" in text else text


def _mailbox_kind(address: str | None) -> str:
    """The mailbox name as the no-reply conventions compare it: "+tag" cut, "-", "_" and "." removed."""
    return re.sub(r"[-_.]", "", _local_part(address).split("+", 1)[0])


def _machine_mailbox(address: str | None) -> str | None:
    """The reason code when ``address`` is a postmaster, MAILER-DAEMON or no-reply mailbox."""
    kind = _mailbox_kind(address)
    if kind in MACHINE_MAILBOXES:
        return "mailer-daemon"
    if any(mark in kind for mark in NO_REPLY_MARKS):
        return "no-reply-sender"
    return None


def looks_machine_subject(subject: str) -> bool:
    """An out-of-office or bounce subject: alone not proof, but enough for a message without a form.

    A forward ("Fwd: Returned mail") is a person passing a report on, not the report.
    """
    if _FORWARD_SUBJECT.match(subject):
        return False
    if _AUTO_REPLY_SUBJECT.search(subject):
        return True  # even when the subject it answers asked something
    return _BOUNCE_SUBJECT.search(subject) is not None and not _PERSONS_QUESTION.search(subject)


def machine_generated(env: Envelope, own_addresses: frozenset[str]) -> str | None:
    """Why this message was written by a machine and must never be answered, or None for a person's mail.

    Only signals a person's mail never carries: they hold even when a form is attached.
    """
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
    for header in LIST_HEADERS:
        if header in headers:
            return header
    if env.content_type == "multipart/report":
        report = (env.report_type or "").lower()
        return f"report:{report}" if report in REPORT_TYPES else "report"
    if env.return_path == "":
        return "null-return-path"
    if _mailbox_kind(env.return_path) in MACHINE_MAILBOXES:
        return "mailer-daemon"
    sender = _machine_mailbox(env.from_addr)
    if sender:
        return sender
    if "x-failed-recipients" in headers:
        return "x-failed-recipients"
    if "x-auto-response-suppress" in headers and _AUTO_REPLY_SUBJECT.search(env.subject):
        return "exchange-auto-reply"
    if env.from_addr.strip().lower() in own_addresses:
        return "own-address"
    return None


def machine_looking(env: Envelope) -> str | None:
    """Why a message without a form reads as a machine's report, or None.

    Weaker than :func:`machine_generated` (a person could write these words), so only for mail that
    carries no form: an auto-reply or bounce subject, a bounce or challenge text or a cloud
    service's JSON notification in the sender's own words, or no sender address at all.
    """
    if looks_machine_subject(env.subject):
        return "machine-subject"
    if not env.from_addr and not env.return_path:
        return "no-sender"
    if _FORWARD_SUBJECT.match(env.subject):
        return None  # a person passing a bounce on: the report is what they forward
    own_text = fresh_text(env.body_text)
    if _JSON_NOTIFICATION.match(own_text):
        return "json-notification"
    if _MACHINE_BODY.search(own_text) and not _PERSONS_QUESTION.search(own_text):
        return "machine-text"
    return None


# ---------------------------------------------------------------------------------------------- replies

_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw)(\[\d+\])?\s*[:：]|(回复|答复|回覆|答覆)\s*[:：]?)", re.IGNORECASE)
ACKNOWLEDGEMENT_MARK = "【已收到】"
# The status marks that open the subjects of the fund's answers (templates/ack/outcomes.toml and
# the admin's closing notice): "回复：【已收到】…" answers one of them even without In-Reply-To.
_OUR_SUBJECT_MARK = re.compile(r"【(已收到|材料不完整|逾期|已更新|重复申报|未见附件|无法读取|已处理)】")


def is_reply_subject(subject: str) -> bool:
    """Re: / RE: / 回复： / 答复: … (a forward, Fw: / 转发, is not a reply)."""
    return _REPLY_PREFIX.match(subject) is not None


def reference_pattern(prefixes: Sequence[str]) -> re.Pattern[str]:
    """The fund's application references, e.g. FUND24-0042."""
    alternatives = "|".join(re.escape(p) for p in prefixes if p) or r"(?!)"
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})-\d{{3,6}}(?!\d)")


def referred_ids(env: Envelope) -> tuple[str, ...]:
    """The Message-IDs this message refers to (In-Reply-To, then References), each once."""
    return tuple(dict.fromkeys((*env.in_reply_to, *env.references)))


def replies_to_us(env: Envelope, ours: Collection[str], reference_prefixes: Sequence[str]) -> str | None:
    """Why this message answers one of the fund's own messages, or None.

    ``ours``: which of its :func:`referred_ids` the fund sent (the caller looks them up).
    """
    if any(mid in ours for mid in env.in_reply_to):
        return "in-reply-to-ours"
    if any(mid in ours for mid in env.references):
        return "references-ours"
    if is_reply_subject(env.subject):
        if _OUR_SUBJECT_MARK.search(env.subject):
            return "reply-to-acknowledgement-subject"
        if reference_pattern(reference_prefixes).search(env.subject):
            return "reply-subject-reference"
    return None


# ---------------------------------------------------------------------------------------------- body text

# Where quoted earlier mail begins, as the common clients write it: Outlook's header block
# ("发件人:" / "From:", "-----Original Message-----", "-----邮件原件-----"), QQ and Foxmail's
# "------------------ 原始邮件 ------------------", NetEase's "---- 回复的原邮件 ----", a rule of
# underscores; and the signature separator of RFC 3676 §4.3 ("-- ") and the mobile clients'
# "Sent from my iPhone" / "发自我的iPhone", after which nothing new is written.
_QUOTE_START = re.compile(
    r"^\s*(-{2,}\s*(original(\s+message)?|原始邮件|邮件原件|原邮件|forwarded message|转发邮件|回复的原邮件)\b"
    r"|(发件人|寄件者|寄件人|from)\s*[:：]"
    r"|_{10,}\s*$"
    r"|--\s*$"
    r"|(sent\s+from\s+my|发自我的|来自我的|发自网易|发自\s*wps|get\s+outlook\s+for|获取\s*outlook))",
    re.IGNORECASE,
)
# The attribution line of a quoting reply, possibly wrapped over up to three lines: Gmail's
# "On Tue, 13 Aug 2024 at 16:12, SMP <min.gao@aminer.cn> wrote:" and, in Chinese,
# "SMP <min.gao@aminer.cn> 于2024年8月13日周二 16:12写道：", Apple Mail's "在 2024年8月13日，16:12，
# SMP <…> 写道：", NetEase's "在 2024-08-13 16:12:00，"SMP" <…> 写道：".
_ATTRIBUTION = re.compile(
    r"\s*(on\s.{3,250}?\swrote|(在|于).{3,250}?写道|.{0,200}?(于|在)\s*\d{2,4}\s*[年/.-].{0,120}?写道"
    r"|.{0,200}?\d{4}[-/.年].{0,120}?\s(wrote|a\s+écrit|schrieb))\s*[:：]\s*",
    re.IGNORECASE | re.DOTALL,
)
_ATTRIBUTION_LINES = 3
_SENTENCE_ENDS = ("。", "！", "？", "!", "?", ".", "；", ";")


def _attribution_at(lines: Sequence[str], index: int) -> int:
    """How many lines from ``index`` on form a quoting attribution ("On … wrote:"), or 0.

    A wrapped attribution continues a line that does not end a sentence, never across an empty
    line, and starts where it starts: new text above it ("谢谢。" / "附上…") is not part of it.
    """
    for count in range(1, _ATTRIBUTION_LINES + 1):
        span = lines[index : index + count]
        if len(span) < count or (count > 1 and (not span[-1].strip() or span[-2].rstrip().endswith(_SENTENCE_ENDS))):
            break
        if _ATTRIBUTION.fullmatch(" ".join(span)):
            later_start = any(_ATTRIBUTION.fullmatch(" ".join(span[skip:])) for skip in range(1, count))
            return 0 if later_start else count
    return 0


def fresh_text(body: str) -> str:
    """The part of a body the sender wrote now: quoted earlier mail (ours included) and signatures cut off.

    Lines quoted with ">" are left out wherever they are; an attribution followed by such lines
    only introduces them (bottom-posted replies go on below); any other quoting style, and a copy of
    one of our answers pasted without any marker, runs to the end.
    """
    lines = body.splitlines()
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        # our answers open with their status mark: from there on the words are ours, however quoted
        if _QUOTE_START.match(line) or _OUR_SUBJECT_MARK.search(line):
            break
        attribution = _attribution_at(lines, index)
        if attribution:
            following = next((rest for rest in lines[index + attribution :] if rest.strip()), "")
            if not following.lstrip().startswith(">"):
                break
            index += attribution
            continue
        if not line.lstrip().startswith(">"):
            kept.append(line)
        index += 1
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
# A clause about a file sent before ("之前发的申报表", "the form I sent", "already submitted"): the
# writer confirms or asks about it, nothing is being sent now.
_SENT_BEFORE = re.compile(
    r"(之前|此前|先前|上次|上封|前面|刚才|早前|昨天|前天|前几天|上周)\S{0,6}?(发|提交|寄|传)|(发|提交|发送|寄|传)过"
    r"|已经(发|提交|发送|寄)了?"
    r"|\b(already|previously|earlier)\s+(sent|submitted|e-?mailed|attached)"
    r"|\b(i|we)\s+(have\s+|had\s+|'ve\s+)?(sent|submitted|e-?mailed)\b"
    r"|\b(sent|submitted)\s+(it\s+|you\s+|to\s+you\s+)?(earlier|before|previously|yesterday|last\s+\w+)",
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


# Intent is read clause by clause: "材料见附件，请问格式可以吗？" sends a file and asks a question.
_CLAUSE_END = re.compile(r"(?<=[。！!？?\n；;，,])")


def _sends_now(clause: str) -> bool:
    """The clause says a file goes with this message (not a question, not about one sent before)."""
    return (
        _SUBMITTING.search(clause) is not None
        and _QUESTION.search(clause) is None
        and _SENT_BEFORE.search(clause) is None
    )


def mentions_submission(env: Envelope, replying: bool = False) -> bool:
    """For a message without a form: did the sender mean to submit (rather than ask or thank)?

    A cloud-drive link, or a clause that says the file is attached now ("材料见附件", "please find
    attached"), is a submission attempt even beside a question. Otherwise any question, or talk of
    a file sent before ("之前发的申报表是最终版"), makes the message correspondence; merely naming
    the form ("申报表-张伟") is a submission, except in a reply to the fund (``replying``), where
    the form is what the conversation is about.
    """
    words = _own_words(env)
    if _CLOUD_LINK.search(words):
        return True
    if any(_sends_now(clause) for clause in _CLAUSE_END.split(words)):
        return True
    if replying or _QUESTION.search(words) or _SENT_BEFORE.search(words):
        return False
    return _SUBMISSION_WORDS.search(words) is not None


def says_it_replaces(env: Envelope) -> bool:
    """The sender says this form replaces an earlier one (更新 / 修改版 / 以此为准 / updated …)."""
    return _REPLACES.search(_own_words(env)) is not None
