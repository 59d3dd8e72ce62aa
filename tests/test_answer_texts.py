"""Every answer an applicant can get, read as they would: Chinese typography, references, deadlines.

All outcomes of both packaged calls, written before and after the deadline, plain text and HTML.
"""

from __future__ import annotations

import email
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailbot.acknowledge import OUTCOMES, AckContext, compose_acknowledgement, make_message_id
from mailbot.config import CallSettings, load_settings
from templates import TemplateSet

REPO = Path(__file__).resolve().parent.parent
SETTINGS = load_settings(REPO / "config.example.toml")
TEMPLATES = TemplateSet()
FORM_FILE = "申报表-陈美玲.docx"


def answer_context(call: CallSettings, outcome: str) -> AckContext:
    """One submission of ``outcome``, arrived (for a late one: just after) the deadline."""
    reference = f"{call.reference_prefix}-0042"
    fields = {
        "project_title": "面向临床诊疗的可信医学问答大模型研究",
        "applicant_name": "陈美玲",
        "institution": "复旦大学",
        "email": None if outcome == "incomplete" else "chenmeiling@fudan.edu.cn",
        "topic": call.topic[0].code,
    }
    arrival = call.deadline + timedelta(minutes=5) if outcome == "late" else call.deadline - timedelta(days=3)
    return AckContext(
        call=call,
        outcome=outcome,
        reference=reference,
        fields=fields if outcome not in ("no_attachment", "unreadable") else {},
        form_file=FORM_FILE if outcome != "no_attachment" else None,
        missing=("email", "phone") if outcome == "incomplete" else (),
        arrival=arrival,
        supersedes_reference=f"{call.reference_prefix}-0007" if outcome == "revision" else None,
        duplicate_of_reference=f"{call.reference_prefix}-0003" if outcome == "duplicate" else None,
        unreadable_reason="corrupt" if outcome == "unreadable" else None,
        original_message_id="<original@fudan.edu.cn>",
        original_references=(),
        original_subject="申报材料",
        reply_to="chenmeiling@fudan.edu.cn",
        applicant_email=None,
        message_id=make_message_id(call, reference, outcome),
    )


class VisibleText(HTMLParser):
    """The text a mail client shows: blocks on their own lines, white space collapsed as a browser does.

    Also notes every piece of text that is not inside an element with ``white-space:nowrap``.
    """

    BLOCKS = frozenset({"p", "div", "td", "tr", "table", "br", "li", "h1", "h2", "h3", "title"})
    VOID = frozenset({"br", "meta", "img", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = [""]
        self.stack: list[tuple[str, bool]] = []
        self.wrappable: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.lines.append("")
        if tag in self.VOID:
            return
        nowrap = "white-space:nowrap" in (dict(attrs).get("style") or "").replace(" ", "")
        self.stack.append((tag, nowrap or any(n for _, n in self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.lines.append("")
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] == "title":
            return
        self.lines[-1] += re.sub(r"\s+", " ", data)
        if not (self.stack and self.stack[-1][1]):
            self.wrappable.append(data)

    def text(self) -> str:
        return "\n".join(line.strip() for line in self.lines if line.strip())


def rendered(call: CallSettings, outcome: str, written: datetime) -> tuple[str, str, str, VisibleText]:
    raw = bytes(compose_acknowledgement(answer_context(call, outcome), TEMPLATES, written))
    mail = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    plain, rich = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and rich is not None
    page = VisibleText()
    page.feed(str(rich.get_content()))
    return str(mail["Subject"]), str(plain.get_content()), page.text(), page


CALLS = [SETTINGS.call_by_id("smp-zhipu-2024"), SETTINGS.call_by_id("caai-ant-2024")]
CASES = [(call, outcome, after) for call in CALLS for outcome in OUTCOMES for after in (False, True)]


@pytest.mark.parametrize(
    ("call", "outcome", "after_deadline"),
    CASES,
    ids=[f"{c.id}-{o}-{'after' if a else 'before'}" for c, o, a in CASES],
)
def test_every_answer_reads_right(call: CallSettings, outcome: str, after_deadline: bool) -> None:
    context = answer_context(call, outcome)
    written = (
        call.effective_deadline + timedelta(days=2)
        if after_deadline
        else max(context.arrival, datetime(2024, 1, 1, tzinfo=UTC)) + timedelta(minutes=1)
    )
    subject, plain, html_text, page = rendered(call, outcome, written)
    reference = context.reference or ""

    for text in (plain, html_text):
        for line in text.splitlines():
            assert not re.search(r"\s前", line), line  # "24:00（北京时间） 前" reads wrong
            assert not re.search(r"。[ \u3000]", line), line
        # a reference is never cut at its hyphen by a line end
        assert not re.search(re.escape(call.reference_prefix) + r"-\s*\n", text)

    # in HTML every reference sits in a no-wrap element
    for piece in page.wrappable:
        assert not re.search(re.escape(call.reference_prefix) + r"-\d{4}", piece), piece

    # the reference is in the subject of every answer that has one
    assert reference in subject, subject

    if after_deadline and outcome != "late":
        for text in (plain, html_text):
            assert not re.search(r"前(回复|如需)|请在.{0,40}截止时间", text), text
            assert "reply before the deadline" not in text and "again before the deadline" not in text
            assert "reply to this message before the deadline" not in text

    if outcome == "unreadable":
        for text in (plain, html_text):
            assert FORM_FILE in text and "两个工作日内" in text and "within two working days" in text
    if outcome == "revision":
        assert "今后来信请使用新编号" in plain and "from now on" in plain


def test_a_late_answer_writes_the_deadline_as_it_was_stated() -> None:
    call = CALLS[0]
    _subject, plain, _html, _page = rendered(call, "late", call.effective_deadline + timedelta(hours=1))
    assert "2024年9月8日 24:00" in plain


def test_the_unreadable_answer_names_the_file_even_without_a_form() -> None:
    call = CALLS[1]
    context = replace(answer_context(call, "unreadable"), form_file="proposal.rar")
    raw = bytes(compose_acknowledgement(context, TEMPLATES, context.arrival + timedelta(minutes=1)))
    assert "proposal.rar" in email.message_from_bytes(raw, policy=policy.default)["Subject"]
