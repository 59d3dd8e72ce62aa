"""The nine outcomes, their precedence, the deadline on arrival, and a replay of the dev corpus's truth."""

from __future__ import annotations

import dataclasses
import email
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailbot.classify import referred_ids
from mailbot.config import example_config_text, parse_settings
from mailbot.decide import decide
from mailbot.decision import (
    ANSWERED,
    APPLICATION_OUTCOMES,
    CallRules,
    Decision,
    Outcome,
    PriorApplication,
)
from mailbot.facts import eligibility_flags
from mailbot.identity import identity_of, same_person
from mailbot.rules import DECISION_RULES
from parsers.model import Envelope, FieldValue, FormReading, Location, Submission, Unreadable
from tests.test_classify import ACK_SUBJECT, QUOTED_ACK, envelope

BEIJING = timezone(timedelta(hours=8))
SETTINGS = parse_settings(tomllib.loads(example_config_text()), "config.example.toml")
SMP = CallRules.from_settings(SETTINGS.call_by_id("smp-zhipu-2024"), SETTINGS.own_addresses)
ANT = CallRules.from_settings(SETTINGS.call_by_id("caai-ant-2024"), SETTINGS.own_addresses)
ON_TIME = datetime(2024, 8, 20, 10, 0, tzinfo=BEIJING)

COMPLETE = {
    "project_title": "中文大模型社会偏见的测量与缓解方法研究",
    "applicant_name": "张诗涵",
    "gender": "女",
    "title": "副教授",
    "degree": "博士",
    "department": "软件学院",
    "institution": "四川大学",
    "phone": "15895289455",
    "email": "zhangs@scu.edu.cn",
    "topic": "5.3",
    "budget": 15.0,
    "prior_grant": False,
}


def form(values: Mapping[str, Any], attachment: str = "申报表.docx", sha256: str | None = None) -> FormReading:
    where = Location(attachment)
    fields = {
        name: FieldValue(value, "" if value is None else str(value), 1.0, where) for name, value in values.items()
    }
    digest = sha256 or hashlib.sha256(json.dumps(dict(values), sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return FormReading(attachment, digest, "docx", fields, (), 1.0)


def submission(env: Envelope | None = None, values: Mapping[str, Any] | None = None, **changes: Any) -> Submission:
    sub = Submission(envelope=env or envelope(), form=form(values) if values is not None else None)
    return dataclasses.replace(sub, **changes)


def never_ours(message_id: str) -> bool:
    return False


NONE_OURS: frozenset[str] = frozenset()


def run(
    sub: Submission,
    arrival: datetime = ON_TIME,
    priors: Sequence[PriorApplication] = (),
    rules: CallRules = SMP,
    key: str = "m-new",
) -> Decision:
    return decide(sub, key, arrival, rules, priors, NONE_OURS)


def prior_of(decision: Decision, sub: Submission, key: str, arrival: datetime) -> PriorApplication:
    """What the store would remember of an application message."""
    assert sub.form is not None and decision.identity is not None and decision.application_key is not None
    title = sub.form.value("project_title")
    return PriorApplication(
        message_key=key,
        arrival=arrival,
        outcome=decision.outcome,
        identity=decision.identity,
        project_title=title if isinstance(title, str) else None,
        form_sha256=sub.form.sha256,
        application_key=decision.application_key,
        reference=None,
    )


def history(*steps: tuple[str, Submission, datetime]) -> list[PriorApplication]:
    """Decide ``steps`` in order and return the application messages among them."""
    priors: list[PriorApplication] = []
    for key, sub, arrival in steps:
        decision = run(sub, arrival, priors, key=key)
        if decision.outcome in APPLICATION_OUTCOMES:
            priors.append(prior_of(decision, sub, key, arrival))
    return priors


# ---------------------------------------------------------------------------- outcome sets


def test_outcome_sets() -> None:
    assert {Outcome.IGNORED, Outcome.CORRESPONDENCE}.isdisjoint(ANSWERED)
    assert len(ANSWERED) == 7
    assert {o.value for o in APPLICATION_OUTCOMES} == {"accepted", "incomplete", "revision", "duplicate"}


def test_rules_from_settings() -> None:
    assert SMP.deadline == datetime(2024, 9, 9, tzinfo=BEIJING)
    assert SMP.eligibility == "phd" and ANT.eligibility == "faculty"
    assert "myjj@caai.cn" in ANT.own_addresses
    assert SMP.institution_aliases["清华"] == "清华大学"


# ---------------------------------------------------------------------------- 1 ignored


def test_machine_mail_is_ignored_even_with_a_form() -> None:
    env = envelope(headers={"auto-submitted": "auto-replied"}, subject="自动回复: 申报")
    decision = run(submission(env, COMPLETE))
    assert decision.outcome is Outcome.IGNORED
    assert decision.rule == "auto-submitted:auto-replied"
    assert "auto-submitted" in decision.explanation


def test_auto_reply_subject_without_headers_is_ignored_when_there_is_no_form() -> None:
    decision = run(submission(envelope(subject="Automatic reply: " + ACK_SUBJECT, body_text="I am away.")))
    assert decision.outcome is Outcome.IGNORED and decision.rule == "machine-subject"
    # with a form it is a person's submission whatever the subject says
    assert run(submission(envelope(subject="自动回复: 申报"), COMPLETE)).outcome is Outcome.ACCEPTED


def test_bounce_is_ignored() -> None:
    env = envelope(
        from_addr="MAILER-DAEMON@mx.aminer.cn",
        return_path="",
        content_type="multipart/report",
        report_type="delivery-status",
        subject="Undelivered Mail Returned to Sender",
    )
    assert run(submission(env)).outcome is Outcome.IGNORED


# ---------------------------------------------------------------------------- 2 correspondence


def test_reply_to_acknowledgement_is_correspondence() -> None:
    env = envelope(subject="答复: " + ACK_SUBJECT, body_text="收到，谢谢老师！\n\n" + QUOTED_ACK)
    decision = run(submission(env))
    assert decision.outcome is Outcome.CORRESPONDENCE
    assert decision.rule == "reply-to-us"
    assert decision.matched["reply"] == "reply-to-acknowledgement-subject"


def test_reply_by_header_is_correspondence() -> None:
    env = envelope(subject="谢谢", in_reply_to=("<ack.1@aminer.cn>",), body_text="好的")
    decision = decide(submission(env), "k", ON_TIME, SMP, (), frozenset({"<ack.1@aminer.cn>"}))
    assert decision.outcome is Outcome.CORRESPONDENCE and decision.matched["reply"] == "in-reply-to-ours"


def test_question_is_correspondence_even_when_it_names_attachments() -> None:
    env = envelope(subject="咨询", body_text="请问官网申报系统一直无法上传附件，邮件提交是否同样有效？")
    decision = run(submission(env))
    assert decision.outcome is Outcome.CORRESPONDENCE and decision.rule == "question"


def test_a_message_that_neither_asks_nor_submits_is_correspondence() -> None:
    decision = run(submission(envelope(subject="你好", body_text="高老师好，我下周到北京开会。")))
    assert decision.outcome is Outcome.CORRESPONDENCE and decision.rule == "message-without-form"


def test_reply_to_acknowledgement_with_a_form_is_judged_as_a_form() -> None:
    priors = history(("m1", submission(values=COMPLETE), ON_TIME))
    env = envelope(subject="回复：" + ACK_SUBJECT, body_text="附件是修改后的申报表。\n" + QUOTED_ACK)
    decision = run(submission(env, {**COMPLETE, "budget": 12}), ON_TIME + timedelta(days=1), priors)
    assert decision.outcome is Outcome.REVISION and decision.supersedes == "m1"


# ---------------------------------------------------------------------------- 3 no_attachment


def test_forgotten_attachment() -> None:
    env = envelope(subject="申报-吕婉婷", body_text="现提交申报材料，详见附件。")
    decision = run(submission(env))
    assert decision.outcome is Outcome.NO_ATTACHMENT and decision.rule == "forgotten-attachment"
    assert decision.identity is not None and decision.identity.email == "zhangwei@pku.edu.cn"


def test_cloud_link_is_no_attachment_and_flagged() -> None:
    env = envelope(body_text="材料较大，已上传至百度网盘：链接: https://pan.baidu.com/s/1p 提取码: 7wvn")
    decision = run(submission(env))
    assert decision.outcome is Outcome.NO_ATTACHMENT and "cloud-link" in decision.flags


def test_reply_that_says_a_form_is_attached_but_is_not() -> None:
    # answering the acknowledgement with "the corrected form is attached" and forgetting it: tell them
    env = envelope(subject="回复：" + ACK_SUBJECT, body_text="附件是修改后的申报表，请查收。\n" + QUOTED_ACK)
    decision = run(submission(env))
    assert decision.outcome is Outcome.NO_ATTACHMENT
    assert "reply" in decision.matched


def test_no_attachment_is_answered_even_after_the_deadline() -> None:
    env = envelope(body_text="附件是我的申报表，请查收。")
    assert run(submission(env), arrival=SMP.deadline + timedelta(days=2)).outcome is Outcome.NO_ATTACHMENT


# ---------------------------------------------------------------------------- 4 unreadable


def test_unreadable_form() -> None:
    sub = submission(unreadable=Unreadable("encrypted", "申报表.docx", "password"))
    decision = run(sub)
    assert decision.outcome is Outcome.UNREADABLE
    assert decision.rule == "unreadable:encrypted" and "申报表.docx" in decision.explanation


def test_unreadable_then_readable_resend_is_the_first_application() -> None:
    first = submission(unreadable=Unreadable("scanned", "scan.pdf"))
    assert run(first).outcome is Outcome.UNREADABLE
    # unreadable messages are never priors, so the re-send is judged as a first form
    assert run(submission(values=COMPLETE), ON_TIME + timedelta(hours=1), priors=()).outcome is Outcome.ACCEPTED


# ---------------------------------------------------------------------------- 5 late


@pytest.mark.parametrize(
    ("arrival", "late"),
    [
        (datetime(2024, 9, 8, 23, 59, 59, tzinfo=BEIJING), False),
        (datetime(2024, 9, 8, 23, 59, 59, 999999, tzinfo=BEIJING), False),
        (datetime(2024, 9, 9, 0, 0, 0, tzinfo=BEIJING), True),
        (datetime(2024, 9, 8, 15, 59, 59, tzinfo=UTC), False),  # 23:59:59 in Beijing
        (datetime(2024, 9, 8, 16, 0, 0, tzinfo=UTC), True),  # 00:00:00 in Beijing
        (datetime(2024, 9, 8, 12, 0, 0, tzinfo=timezone(timedelta(hours=-4))), True),  # 00:00 Beijing
    ],
)
def test_deadline_is_judged_on_arrival_in_any_zone(arrival: datetime, late: bool) -> None:
    decision = run(submission(values=COMPLETE), arrival)
    assert (decision.outcome is Outcome.LATE) is late


def test_date_header_before_deadline_but_arrival_after_is_late() -> None:
    env = envelope(date=datetime(2024, 9, 8, 23, 58, tzinfo=BEIJING))
    decision = run(submission(env, COMPLETE), datetime(2024, 9, 9, 0, 4, 5, tzinfo=BEIJING))
    assert decision.outcome is Outcome.LATE
    assert decision.matched["arrival"].startswith("2024-09-09 00:04:05")
    assert "Date: header" in decision.explanation
    assert decision.application_key is None


def test_date_header_after_deadline_but_arrival_before_is_on_time() -> None:
    env = envelope(date=datetime(2024, 9, 9, 0, 3, tzinfo=BEIJING))  # the sender's clock is fast
    decision = run(submission(env, COMPLETE), datetime(2024, 9, 8, 23, 57, 4, tzinfo=BEIJING))
    assert decision.outcome is Outcome.ACCEPTED


def test_grace_minutes_move_the_deadline() -> None:
    call = SETTINGS.call_by_id("smp-zhipu-2024").model_copy(update={"grace_minutes": 10})
    rules = CallRules.from_settings(call, SETTINGS.own_addresses)
    decision = run(submission(values=COMPLETE), datetime(2024, 9, 9, 0, 5, tzinfo=BEIJING), rules=rules)
    assert decision.outcome is Outcome.ACCEPTED


def test_late_form_keeps_its_fields_and_names_the_earlier_application() -> None:
    priors = history(("m1", submission(values=COMPLETE), ON_TIME))
    decision = run(submission(values=COMPLETE), SMP.deadline + timedelta(days=1), priors)
    assert decision.outcome is Outcome.LATE
    assert decision.matched["applicant_name"] == "张诗涵"
    assert decision.matched["earlier_application"] == "m1"


def test_naive_arrival_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        run(submission(values=COMPLETE), datetime(2024, 8, 20, 10, 0))


# ---------------------------------------------------------------------------- 6 accepted / incomplete


def test_first_complete_form_is_accepted() -> None:
    decision = run(submission(values=COMPLETE), key="m1")
    assert decision.outcome is Outcome.ACCEPTED
    assert decision.application_key == "m1" and decision.missing == ()
    assert decision.matched["project_title"] == COMPLETE["project_title"]
    assert decision.identity is not None and decision.identity.institution_key == "四川大学"


def test_missing_contact_is_listed_as_email_and_phone() -> None:
    decision = run(submission(values={**COMPLETE, "email": None, "phone": ""}))
    assert decision.outcome is Outcome.INCOMPLETE
    assert decision.missing == ("email", "phone")


def test_one_contact_is_enough() -> None:
    assert run(submission(values={**COMPLETE, "email": None})).outcome is Outcome.ACCEPTED
    assert run(submission(values={**COMPLETE, "phone": None})).outcome is Outcome.ACCEPTED


def test_missing_fields_follow_the_form_order() -> None:
    values = {
        **COMPLETE,
        "institution": None,
        "topic": None,
        "project_title": None,
        "email": None,
        "phone": None,
    }
    decision = run(submission(values=values))
    assert decision.missing == ("project_title", "institution", "topic", "email", "phone")


def test_before_opening_is_flagged_not_refused() -> None:
    decision = run(submission(values=COMPLETE), datetime(2024, 7, 30, tzinfo=BEIJING))
    assert decision.outcome is Outcome.ACCEPTED and "before-opening" in decision.flags


# ---------------------------------------------------------------------------- 7 revision


def test_corrected_title_is_a_revision_of_the_latest_form() -> None:
    first = {**COMPLETE, "project_title": "中文大模型社会偏见的测量与缓解方法研宄"}
    second = {**COMPLETE, "phone": "17804827780"}
    third = {**COMPLETE, "institution": "川大"}
    priors = history(("m1", submission(values=first), ON_TIME), ("m2", submission(values=second), ON_TIME))
    assert [p.outcome for p in priors] == [Outcome.ACCEPTED, Outcome.REVISION]
    decision = run(submission(values=third), ON_TIME + timedelta(hours=2), priors)
    assert decision.outcome is Outcome.REVISION
    assert decision.supersedes == "m2" and decision.application_key == "m1"
    assert decision.rule == "same-title"


def test_revision_from_another_address_with_the_name_in_latin() -> None:
    priors = history(("m1", submission(values=COMPLETE), ON_TIME))
    values = {**COMPLETE, "applicant_name": "Shihan Zhang", "email": "shihan@gmail.com"}
    env = envelope(from_addr="shihan@gmail.com")
    decision = run(submission(env, values), ON_TIME + timedelta(days=1), priors)
    assert decision.outcome is Outcome.REVISION
    assert decision.matched["same_person_by"] == "mobile"


def test_complete_resend_of_an_incomplete_form_is_a_revision() -> None:
    incomplete = {**COMPLETE, "email": None, "phone": None}
    priors = history(("m1", submission(values=incomplete), ON_TIME))
    assert priors[0].outcome is Outcome.INCOMPLETE
    decision = run(submission(values=COMPLETE), ON_TIME + timedelta(hours=12), priors)
    assert decision.outcome is Outcome.REVISION
    assert decision.supersedes == "m1" and decision.missing == ()


def test_untitled_incomplete_form_completed_later_is_a_revision() -> None:
    priors = history(("m1", submission(values={**COMPLETE, "project_title": None}), ON_TIME))
    decision = run(submission(values=COMPLETE), ON_TIME + timedelta(hours=1), priors)
    assert decision.outcome is Outcome.REVISION and decision.rule == "untitled"


def test_still_incomplete_revision_is_flagged() -> None:
    priors = history(("m1", submission(values={**COMPLETE, "email": None, "phone": None}), ON_TIME))
    decision = run(submission(values={**COMPLETE, "email": None, "phone": None, "budget": 20}), ON_TIME, priors)
    assert decision.outcome is Outcome.REVISION
    assert decision.missing == ("email", "phone") and "still-incomplete" in decision.flags


def test_reworded_title_with_a_replacement_note_is_a_revision() -> None:
    priors = history(("m1", submission(values=COMPLETE), ON_TIME))
    values = {**COMPLETE, "project_title": "面向中文社交语料的价值偏差量化评测体系"}
    env = envelope(subject="申报表（修改版）-张诗涵", body_text="之前的申报表有误，请以此版本为准。")
    decision = run(submission(env, values), ON_TIME + timedelta(days=1), priors)
    assert decision.outcome is Outcome.REVISION and decision.rule == "says-replaces"
    # the same new title without the note is a second project
    assert run(submission(values=values), ON_TIME, priors).outcome is Outcome.DUPLICATE


def test_identical_file_resent_is_the_same_submission_whatever_the_headers() -> None:
    priors = history(("m1", submission(values=COMPLETE), ON_TIME))
    stranger = envelope(from_addr="someone@qq.com", subject="另一个项目")
    resent = Submission(stranger, form=form(COMPLETE, sha256=priors[0].form_sha256))
    decision = run(resent, ON_TIME + timedelta(days=1), priors)
    assert decision.outcome is Outcome.REVISION
    assert decision.rule == "same-file" and decision.supersedes == "m1"


def test_two_people_sending_the_same_blank_template_are_not_merged() -> None:
    blank = dict.fromkeys(COMPLETE)
    first = Submission(envelope(from_addr="a@pku.edu.cn"), form=form(blank, sha256="blank"))
    priors = history(("m1", first, ON_TIME))
    assert priors[0].outcome is Outcome.INCOMPLETE
    second = Submission(envelope(from_addr="b@fudan.edu.cn"), form=form(blank, sha256="blank"))
    assert run(second, ON_TIME, priors).outcome is Outcome.INCOMPLETE


# ---------------------------------------------------------------------------- 8 duplicate


def test_second_project_is_a_duplicate_of_the_first_application() -> None:
    other = {**COMPLETE, "project_title": "大模型在高校程序设计课程中的应用与效果评估", "topic": "3.3"}
    third = {**COMPLETE, "project_title": "基于大模型的金融反欺诈风险识别方法研究", "topic": "4.2"}
    priors = history(
        ("m1", submission(values=COMPLETE), ON_TIME),
        ("m2", submission(values={**COMPLETE, "budget": 20}), ON_TIME + timedelta(hours=1)),
        ("m3", submission(values=other), ON_TIME + timedelta(hours=2)),
    )
    assert [p.outcome for p in priors] == [Outcome.ACCEPTED, Outcome.REVISION, Outcome.DUPLICATE]
    assert priors[2].application_key == "m3"
    decision = run(submission(values=third), ON_TIME + timedelta(hours=3), priors)
    assert decision.outcome is Outcome.DUPLICATE and decision.duplicate_of == "m1"
    # a corrected re-send of the second project revises the second project
    again = run(submission(values={**other, "budget": 9}), ON_TIME + timedelta(hours=4), priors)
    assert again.outcome is Outcome.REVISION and again.supersedes == "m3"


def test_homonyms_at_different_institutions_are_two_applicants() -> None:
    suzhou = {**COMPLETE, "applicant_name": "邱子轩", "institution": "苏州大学", "email": "qzx@gmail.com"}
    suzhou["phone"] = "18231802662"
    sysu = {
        **COMPLETE,
        "applicant_name": "邱子轩",
        "institution": "中山大学",
        "email": "qzx@mail.sysu.edu.cn",
    }
    sysu.update(phone="18885345365", project_title="融合电子病历的医学大模型可解释推理方法研究")
    priors = history(("m1", submission(values=suzhou), ON_TIME))
    assert run(submission(values=sysu), ON_TIME, priors).outcome is Outcome.ACCEPTED


def test_same_person_in_both_calls_is_not_a_duplicate() -> None:
    priors = history(("smp-1", submission(values=COMPLETE), ON_TIME))
    # priors are per call: the other call's rules see none of them
    decision = decide(submission(values=COMPLETE), "ant-1", datetime(2024, 5, 10, tzinfo=BEIJING), ANT, (), NONE_OURS)
    assert priors and decision.outcome is Outcome.ACCEPTED


# ---------------------------------------------------------------------------- eligibility


@pytest.mark.parametrize(
    ("values", "eligibility", "flags"),
    [
        ({"degree": "博士"}, "phd", ()),
        ({"degree": "PhD"}, "phd", ()),
        ({"degree": "Ph.D."}, "phd", ()),
        ({"degree": "硕士"}, "phd", ("eligibility:no-phd",)),
        ({"degree": None}, "phd", ("eligibility:degree-unknown",)),
        ({"title": "副教授"}, "faculty", ()),
        ({"title": "助理研究员"}, "faculty", ()),
        ({"title": "讲师"}, "faculty", ()),
        ({"title": "高级工程师"}, "faculty", ()),
        ({"title": "Associate Professor"}, "faculty", ()),
        ({"title": "博士后"}, "faculty", ("eligibility:not-faculty",)),
        ({"title": "Postdoctoral Researcher"}, "faculty", ("eligibility:not-faculty",)),
        ({"title": "博士研究生"}, "faculty", ("eligibility:not-faculty",)),
        ({}, "faculty", ("eligibility:title-unknown",)),
        ({"degree": "学士"}, "none", ()),
    ],
)
def test_eligibility_flags(values: dict[str, object], eligibility: Any, flags: tuple[str, ...]) -> None:
    assert eligibility_flags(values, eligibility) == flags


def test_eligibility_never_decides() -> None:
    decision = run(submission(values={**COMPLETE, "degree": "硕士"}))
    assert decision.outcome is Outcome.ACCEPTED and "eligibility:no-phd" in decision.flags


def test_every_decision_explains_itself() -> None:
    samples = [
        submission(envelope(headers={"list-id": "x"})),
        submission(envelope(subject="Re: " + ACK_SUBJECT, body_text="谢谢")),
        submission(envelope(body_text="见附件")),
        submission(unreadable=Unreadable("corrupt", "a.docx")),
        submission(values=COMPLETE),
    ]
    for sub in samples:
        decision = run(sub)
        assert decision.rule and decision.explanation.endswith(".") and decision.matched


# ---------------------------------------------------------------------------- the dev corpus

FORM_OUTCOMES = {"accepted", "incomplete", "late", "revision", "duplicate"}
MESSAGE_ID = re.compile(r"<[^<>]+>")


def _addresses(message: EmailMessage, header: str) -> tuple[str, ...]:
    value = message[header]
    if value is None:
        return ()
    return tuple(a.addr_spec.lower() for a in value.addresses if a.addr_spec)


def _body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = str(part.get_content())
    return re.sub(r"<[^>]+>", "\n", text) if part.get_content_type() == "text/html" else text


def envelope_from_eml(raw: bytes) -> Envelope:
    """The envelope a mail parser would produce, from Python's email package (for tests only)."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    sender = message["From"]
    sender_address = sender.addresses[0] if sender is not None and sender.addresses else None
    return_path = message["Return-Path"]
    date = message["Date"]
    return Envelope(
        message_id=str(message["Message-ID"]).strip() if message["Message-ID"] else None,
        subject=str(message["Subject"] or ""),
        from_addr=sender_address.addr_spec.lower() if sender_address else "",
        from_name=sender_address.display_name if sender_address else "",
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        reply_to=_addresses(message, "Reply-To"),
        date=date.datetime if date is not None else None,
        in_reply_to=tuple(MESSAGE_ID.findall(str(message["In-Reply-To"] or ""))),
        references=tuple(MESSAGE_ID.findall(str(message["References"] or ""))),
        return_path=None if return_path is None else str(return_path).strip().strip("<>"),
        content_type=message.get_content_type(),
        report_type=message.get_param("report-type"),  # type: ignore[arg-type]
        headers={name.lower(): str(value) for name, value in message.items() if name.lower() != "received"},
        body_text=_body_text(message),
        received_times=(),
    )


def _truth_submission(name: str, truth: Mapping[str, Any], raw: bytes) -> Submission:
    env = envelope_from_eml(raw)
    if truth["outcome"] in FORM_OUTCOMES:
        attachment = truth["form"]["attachment"]
        reading = form(truth["fields"], attachment, hashlib.sha256(name.encode()).hexdigest())
        return Submission(env, form=reading)
    if truth["outcome"] == "unreadable":
        return Submission(env, unreadable=Unreadable(truth["reason"], truth["form"]["attachment"]))
    return Submission(env)


def _acknowledgement_id(message_id: str) -> bool:
    """The store's lookup of the acknowledgements it sent: in the corpus they are <ack.REF.…@domain>."""
    return message_id.startswith("<ack.")


@pytest.mark.parametrize("is_our_message_id", [_acknowledgement_id, never_ours], ids=["by-header", "by-subject"])
def test_dev_corpus_decisions(corpus_dir: Path, is_our_message_id: Callable[[str], bool]) -> None:
    """Replays each call in arrival order; replies are found by In-Reply-To, or by subject alone."""
    manifest = json.loads((corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    message_ids = {entry["name"]: entry["message_id"] for entry in manifest["index"]}
    truths = {name: json.loads((corpus_dir / f"{name}.json").read_text(encoding="utf-8")) for name in message_ids}
    rules = {call.id: CallRules.from_settings(call, SETTINGS.own_addresses) for call in SETTINGS.call}
    priors: dict[str, list[PriorApplication]] = {call_id: [] for call_id in rules}
    wrong: list[str] = []
    order = sorted(truths, key=lambda name: datetime.fromisoformat(truths[name]["arrival"]))
    for name in order:
        truth = truths[name]
        sub = _truth_submission(name, truth, (corpus_dir / f"{name}.eml").read_bytes())
        arrival = datetime.fromisoformat(truth["arrival"])
        call_priors = priors[truth["call"]]
        key = message_ids[name]
        ours = frozenset(filter(is_our_message_id, referred_ids(sub.envelope)))
        decision = decide(sub, key, arrival, rules[truth["call"]], call_priors, ours)
        expected = (
            truth["outcome"],
            message_ids.get(truth.get("supersedes") or ""),
            message_ids.get(truth.get("duplicate_of") or ""),
            tuple(truth.get("missing") or ()),
        )
        got = (decision.outcome.value, decision.supersedes, decision.duplicate_of, decision.missing)
        if decision.outcome is Outcome.LATE:
            got = (*got[:3], ())  # a late form's missing fields are recorded but not part of the truth
        if got != expected:
            wrong.append(f"{name}: expected {expected}, got {got} ({decision.rule}: {decision.explanation})")
        if decision.outcome in APPLICATION_OUTCOMES:
            call_priors.append(prior_of(decision, sub, key, arrival))
    assert len(order) == manifest["messages"] == 81
    assert not wrong, "\n".join(wrong)


def test_corpus_identity_of_each_form_matches_its_applicant(corpus_dir: Path) -> None:
    """Forms of one applicant in one call are the same person; different applicants never are."""
    forms = []
    for path in sorted(corpus_dir.glob("*-*.json")):
        truth = json.loads(path.read_text(encoding="utf-8"))
        if truth["outcome"] in FORM_OUTCOMES:
            identity = identity_of(truth["fields"], truth["mail"]["from"], SMP.institution_aliases)
            forms.append((truth["call"], truth["applicant_key"], identity))
    for i, (call_a, person_a, identity_a) in enumerate(forms):
        for call_b, person_b, identity_b in forms[i + 1 :]:
            if call_a == call_b:
                assert same_person(identity_a, identity_b) == (person_a == person_b), (person_a, person_b)


# ---------------------------------------------------------------------------- the rules walked


def test_each_decision_records_the_rules_tried_and_the_one_that_decided() -> None:
    first = {**COMPLETE, "project_title": "中文大模型社会偏见的测量与缓解方法研宄"}
    priors = history(("m1", submission(values=first), ON_TIME))
    revision = run(submission(values=COMPLETE), ON_TIME + timedelta(hours=1), priors)
    assert revision.rule_hits == ("same-title",)
    assert revision.rule_misses == ("machine", "late", "same-file", "first-form")
    ignored = run(submission(envelope(headers={"auto-submitted": "auto-replied"}), COMPLETE))
    assert (ignored.rule_hits, ignored.rule_misses) == (("machine",), ())
    question = run(submission(envelope(subject="咨询", body_text="请问截止时间是哪天？")))
    assert question.rule_hits == ("correspondence",)
    assert question.rule_misses == ("machine", "machine-looking", "missing-attachment", "reply-to-us")


def test_every_reading_ends_in_a_rule_that_always_decides() -> None:
    """The walk cannot fall off the end: the last rule for each kind of reading decides unconditionally."""
    for reading in ("form", "unreadable", "no_form"):
        last = [rule for rule in DECISION_RULES if reading in rule.applies_to][-1]
        assert last.name in ("different-project", "unreadable", "correspondence"), reading
    assert len({rule.name for rule in DECISION_RULES}) == len(DECISION_RULES)
