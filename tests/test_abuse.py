"""Attacks on the logic around the readers, each through the real pipeline (Dovecot or pymap, aiosmtpd,
SQLite): hijacking and squatting an application, backscatter, relaying through the fund's address,
limits that do not hold, one message stalling everyone, one value breaking every export.

Every test plays the attacker against a bot configured as a fund office would, and checks what the
applicant, the third party, the coordinators and the database end up with.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import select

import mailbot.deciding
import mailbot.identity
from mailbot.admin.queue_actions import confirm_item
from mailbot.admin.status import status_report
from mailbot.clock import BEIJING
from mailbot.config import parse_settings
from mailbot.demo import local_config
from mailbot.digest.contents import build_digest
from mailbot.digest.render import render_digest
from mailbot.embedded import SmtpSink
from mailbot.export import to_xlsx
from mailbot.identity import Identity
from mailbot.review import windows_safe
from mailbot.worker import Worker
from parsers.sandbox import ParserPool
from storage.models import Application, Message, MessageState, OutboxMail
from tests.conftest import PASSWORD_ENV, ImapServer
from tests.parsers.builders import DOCX_TYPE, SMP_ROWS, message, mime_part, table_form, text_part

SMP_BOX = "min.gao@aminer.cn"
CAAI_BOX = "myjj@caai.cn"
START = datetime(2024, 8, 20, 9, 0, tzinfo=BEIJING)
TITLE = SMP_ROWS[0][1]
VICTIM = "zhangwei@tsinghua.edu.cn"
ATTACKER = "mallory@evil.example"
TRUSTED = "mx.aminer.cn"


# --- building mail ---------------------------------------------------------------------------------


def smp_form(
    name: str = "张伟",
    institution: str = "清华大学",
    email_addr: str = VICTIM,
    title: str = TITLE,
    phone: str = "13812345678",
) -> bytes:
    rows = [list(row) for row in SMP_ROWS]
    rows[0][1], rows[1][1], rows[4][1], rows[5][1], rows[5][3] = title, name, institution, phone, email_addr
    return table_form(rows)


def noise(length: int) -> str:
    """``length`` CJK characters that do not compress (a run of one character is refused as a zip bomb)."""
    chooser = random.Random(length)
    return "".join(chr(chooser.randrange(0x4E00, 0x9FA5)) for _ in range(length))


def encoded(text: str) -> bytes:
    return b"=?UTF-8?B?" + base64.b64encode(text.encode()) + b"?="


def mail(
    sender: str,
    form: bytes | None,
    *,
    subject: str = "申报材料",
    body: str = "您好，附件为申报表，请查收。",
    to: str = SMP_BOX,
    headers: dict[str, str] | None = None,
    attachment: str = "申报表.docx",
    extra_parts: tuple[bytes, ...] = (),
) -> bytes:
    parts = [text_part(body), *extra_parts]
    if form is not None:
        disposition = b'attachment; filename="' + encoded(attachment) + b'"'
        parts.append(mime_part(form, DOCX_TYPE, disposition))
    head = {
        "From": sender.encode(),
        "To": to.encode(),
        "Subject": encoded(subject),
        "Message-ID": f"<{uuid.uuid4().hex}@mail.test>".encode(),
    }
    head.update({name: value.encode() for name, value in (headers or {}).items()})
    return message(parts, head)


def person(number: int, domain: str = "pku.edu.cn") -> dict[str, str]:
    """A distinct applicant: own name, institution, phone and address."""
    names = "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施孔曹严华金魏陶姜"
    return {
        "name": f"{names[number % len(names)]}{names[(number * 7 + 3) % len(names)]}明",
        "institution": ["北京大学", "复旦大学", "浙江大学", "南京大学", "武汉大学", "中山大学"][number % 6],
        "email_addr": f"applicant{number}@{domain}",
        "title": f"第{number}个关于大模型可信推理的课题",
        "phone": f"139{number:08d}",
    }


# --- the world: servers, the bot, what reached whom ----------------------------------------------------


@dataclass
class World:
    tmp_path: Path
    imap: ImapServer
    sink: SmtpSink
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: datetime = START

    @property
    def settings(self) -> Any:
        raw = local_config(
            self.tmp_path / "data", (self.imap.host, self.imap.port), (self.sink.host, self.sink.port), PASSWORD_ENV
        )
        for name, values in self.sections.items():
            raw.setdefault(name, {}).update(values)
        return parse_settings(raw, "test configuration")

    def deliver(self, raw: bytes, box: str = SMP_BOX, arrival: datetime | None = None) -> str:
        self.clock += timedelta(minutes=7)
        self.imap.append(box, raw, arrival or self.clock)
        return str(email.message_from_bytes(raw)["Message-ID"])

    def run(self) -> None:
        with Worker(self.settings) as bot:
            summary = bot.single_pass()
        assert summary.errors == []

    def message(self, message_id: str) -> Message:
        with Worker(self.settings) as bot, bot.store.sessions() as session:
            found = session.scalar(select(Message).where(Message.message_id == message_id))
            assert found is not None
            session.expunge(found)
            return found

    def application_of(self, message_id: str) -> tuple[Application, Message]:
        """The application ``message_id`` belongs to, and the message that is its current form."""
        with Worker(self.settings) as bot, bot.store.sessions() as session:
            own = session.scalar(select(Message).where(Message.message_id == message_id))
            assert own is not None and own.application_id is not None
            application = session.get_one(Application, own.application_id)
            current = session.get_one(Message, application.current_message_pk)
            session.expunge_all()
            return application, current

    def mails(self) -> list[EmailMessage]:
        out = []
        for received in self.sink.received:
            parsed = email.message_from_bytes(received.raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            out.append(parsed)
        return out

    def mails_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mails() if address.lower() in str(m["To"]).lower() or address in str(m["Cc"] or "")]

    def review_record(self, message_id: str) -> dict[str, Any]:
        with Worker(self.settings) as bot:
            folder = bot.review.folder_of(self.message(message_id))
        record: dict[str, Any] = json.loads((folder / "reason.json").read_text(encoding="utf-8"))
        return record


def text_of(mail_message: EmailMessage) -> str:
    body = mail_message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def is_notice(mail_message: EmailMessage) -> bool:
    return str(mail_message["Auto-Submitted"]) == "auto-generated"


@pytest.fixture
def make_world(tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink) -> Callable[..., World]:
    def make(**sections: dict[str, Any]) -> World:
        return World(tmp_path, imap_server, smtp_sink, dict(sections))

    return make


# --- 1. hijacking ---------------------------------------------------------------------------------------

HIJACKS = {
    # the attacker's own title and address, and the mail says it replaces the earlier form
    "says-it-replaces": dict(email_addr=ATTACKER, title="一个完全不同的项目", phone=""),
    # the applicant's public address written into the form
    "public-email": dict(email_addr=VICTIM, title="另一个完全不同的项目", phone="13900000002"),
    # no contacts at all and the same title
    "no-contacts": dict(email_addr="", title=TITLE, phone=""),
}


@pytest.mark.parametrize("variant", sorted(HIJACKS))
def test_a_stranger_cannot_replace_an_application(make_world: Callable[..., World], variant: str) -> None:
    world = make_world()
    genuine = world.deliver(mail(VICTIM, smp_form()))
    world.run()
    reference = world.message(genuine).reference
    assert reference
    forged = world.deliver(
        mail(ATTACKER, smp_form(**HIJACKS[variant]), subject="修改稿，以此为准", body="以此为准，替换之前的申报表。")
    )
    world.run()

    # the application stays the applicant's
    application, current = world.application_of(genuine)
    assert current.message_id == genuine
    assert (application.fields or {})["email"] == VICTIM and application.project_title == TITLE
    # the forged form is recorded as what it is, and held for the coordinators naming both
    held = world.message(forged)
    assert held.outcome in ("revision", "duplicate") and held.state == MessageState.REVIEW
    assert held.application_id is None
    assert "identity-conflict" in (held.decision or {})["flags"]
    record = world.review_record(forged)
    assert record["reason"] == "identity-conflict"
    assert reference in record["diagnostics"]["conflict_references"]
    assert record["diagnostics"]["new_sender"] == ATTACKER
    # the applicant is told, in fixed words, from where the form came
    [notice] = [m for m in world.mails_to(VICTIM) if is_notice(m)]
    assert ATTACKER in text_of(notice) and HIJACKS[variant]["title"] not in text_of(notice)
    assert notice["In-Reply-To"] is None
    # the stranger's answer quotes nothing of the application
    [answer] = world.mails_to(ATTACKER)
    for secret in (reference, TITLE, "张伟", "清华大学", VICTIM):
        assert secret not in text_of(answer) and secret not in str(answer["Subject"])


def test_the_applicant_still_revises_from_an_address_on_the_application(make_world: Callable[..., World]) -> None:
    """From the earlier sender, from the form's email after a secretary sent the first, or as a reply."""
    world = make_world()
    secretary = "office@cs.tsinghua.edu.cn"
    first = world.deliver(mail(secretary, smp_form()))
    world.run()
    [our_answer] = world.mails_to(secretary)
    from_form_email = world.deliver(mail(VICTIM, smp_form(title=TITLE + "（修订）"), subject="修改稿"))
    world.run()
    from_earlier_sender = world.deliver(mail(secretary, smp_form(title=TITLE + "（第三稿）"), subject="修改稿"))
    world.run()
    reply = world.deliver(
        mail(
            "zw.private@163.com",
            smp_form(title=TITLE + "（终稿）"),
            subject="Re: 修改稿",
            headers={"In-Reply-To": str(our_answer["Message-ID"])},
        )
    )
    world.run()
    for applied in (from_form_email, from_earlier_sender, reply):
        held = world.message(applied)
        assert (held.outcome, held.state) == ("revision", MessageState.DONE), applied
    _, current = world.application_of(first)
    assert current.message_id == reply
    assert not [m for m in world.mails() if is_notice(m)]


def test_an_admin_confirms_a_held_form(make_world: Callable[..., World]) -> None:
    world = make_world()
    genuine = world.deliver(mail(VICTIM, smp_form()))
    world.run()
    personal = world.deliver(mail("zw.private@163.com", smp_form(title=TITLE + "（修订）"), subject="修改稿"))
    world.run()
    assert world.message(personal).state == MessageState.REVIEW
    with Worker(world.settings) as bot:
        result = confirm_item(bot, world.message(personal).id, "admin")
    assert result.outcome == "revision" and not result.in_review
    _, current = world.application_of(genuine)
    assert current.message_id == personal


# --- 2. squatting ---------------------------------------------------------------------------------------


def test_a_squatter_does_not_make_the_applicant_a_duplicate(make_world: Callable[..., World]) -> None:
    world = make_world()
    squatter = "squatter@evil.example"
    squatted = world.deliver(mail(squatter, smp_form(title="抢注的项目名称")))
    world.run()
    squatter_reference = world.message(squatted).reference
    assert squatter_reference
    genuine = world.deliver(mail(VICTIM, smp_form(title=TITLE)))
    world.run()

    held = world.message(genuine)
    assert held.state == MessageState.REVIEW and "identity-conflict" in (held.decision or {})["flags"]
    record = world.review_record(genuine)
    assert record["diagnostics"]["new_sender"] == VICTIM
    assert record["diagnostics"]["addresses_on_record"] == [squatter]
    [answer] = [m for m in world.mails_to(VICTIM) if not is_notice(m)]
    assert "重复" not in str(answer["Subject"]) and "uplicate" not in str(answer["Subject"])
    assert "uplicate" not in text_of(answer) and squatter_reference not in text_of(answer)
    assert "address on record" in text_of(answer)
    # the squatter's address is the one on record: it is told that someone else sent a form
    assert [m for m in world.mails_to(squatter) if is_notice(m)]


# --- 3. backscatter -------------------------------------------------------------------------------------


def _results(verdicts: str, sender_domain: str) -> str:
    return f"{TRUSTED}; {verdicts} header.from={sender_domain}"


BACKSCATTER: dict[str, tuple[dict[str, str], bool]] = {
    "dmarc-fail": ({"Authentication-Results": _results("spf=pass; dkim=none; dmarc=fail", "{d}")}, False),
    "spf-fail": ({"Authentication-Results": f"{TRUSTED}; spf=fail smtp.mailfrom={{a}}; dkim=none"}, False),
    "spam-flag": ({"X-Spam-Flag": "YES"}, False),
    "spam-status": ({"X-Spam-Status": "Yes, score=12.1 required=5.0"}, False),
    "not-addressed": ({"To": "someone@else.example"}, False),
    "envelope-disagrees": ({"Return-Path": "<bounce@evil.example>"}, False),
    "authenticated": (
        {
            "Return-Path": "<{a}>",
            "Authentication-Results": f"{TRUSTED}; spf=pass; dkim=pass header.d={{d}}; dmarc=pass header.from={{d}}",
        },
        True,
    ),
    "plain": ({"Return-Path": "<{a}>"}, True),
}


def test_forged_spam_and_unaddressed_mail_is_decided_but_not_answered(make_world: Callable[..., World]) -> None:
    world = make_world(security={"trusted_authserv_ids": [TRUSTED]})
    senders = {}
    for number, (case, (headers, _)) in enumerate(sorted(BACKSCATTER.items())):
        who = person(number + 1, domain=f"case{number}.edu.cn")
        address, domain = who["email_addr"], who["email_addr"].partition("@")[2]
        filled = {name: value.format(a=address, d=domain) for name, value in headers.items()}
        senders[case] = (address, world.deliver(mail(address, smp_form(**who), headers=filled)))
    # a Reply-To to a third party, and an Authentication-Results header the sender wrote himself
    third = "victim@third.example"
    who = person(20, domain="rt.edu.cn")
    for case, extra in (
        ("reply-to", {}),
        ("self-written-results", {"Authentication-Results": "evil.example; dkim=pass header.d=rt.edu.cn; dmarc=pass"}),
    ):
        who = person(21 if extra else 20, domain="rt.edu.cn")
        headers = {"Reply-To": third, **extra}
        senders[case] = (who["email_addr"], world.deliver(mail(who["email_addr"], smp_form(**who), headers=headers)))
    world.run()

    for case, (address, message_id) in senders.items():
        assert world.message(message_id).outcome == "accepted", case
        answered = BACKSCATTER.get(case, ({}, True))[1]
        assert len(world.mails_to(address)) == (1 if answered else 0), case
    assert world.mails_to(third) == []
    # the coordinators see every message that was not answered, with the reason
    with Worker(world.settings) as bot, bot.store.sessions() as session:
        call = world.settings.call_by_id("smp-zhipu-2024")
        data = build_digest(session, world.settings, call, START.date(), datetime.now(BEIJING))
        withheld = [p for p in data.ack_problems if p.problem == "withheld"]
        assert len(withheld) == sum(1 for _, ok in BACKSCATTER.values() if not ok)
        assert any("DMARC" in p.detail for p in withheld) and any("spam" in p.detail for p in withheld)
        assert "not answered" in render_digest(data, bot.templates)[1]


def test_an_unauthenticated_sender_gets_no_clickable_link_back(make_world: Callable[..., World]) -> None:
    world = make_world()
    sender = "someone@pku.edu.cn"
    lure = "请立即验证 http://evil.example/login 否则失效"
    world.deliver(mail(sender, smp_form(**{**person(3), "title": lure, "email_addr": sender}), subject=lure))
    world.run()
    [answer] = world.mails_to(sender)
    html = answer.get_body(("html",))
    assert html is not None
    for text in (text_of(answer), str(html.get_content()), str(answer["Subject"])):
        assert "http://evil.example" not in text and "evil.example" not in text


# --- 4. relay -------------------------------------------------------------------------------------------


def test_forms_naming_a_third_party_send_it_nothing_but_bounded_fixed_notices(make_world: Callable[..., World]) -> None:
    target = "target@victim.example"
    world = make_world(
        smtp={"max_answers_per_recipient_per_day": 2},
        security={"trusted_authserv_ids": [TRUSTED]},
    )
    lure = "中奖通知 http://evil.example/prize"
    for number in range(12):  # throw-away senders, nobody authenticated
        who = {**person(number), "email_addr": target, "title": lure}
        world.deliver(mail(f"throwaway{number}@spam{number}.example", smp_form(**who), subject=lure))
    world.run()
    assert world.mails_to(target) == [], "no copy, no Cc, no notice for unauthenticated senders"

    for number in range(12, 16):  # authenticated senders: a fixed notice at most, within the target's limit
        who = {**person(number, domain=f"real{number}.edu.cn"), "email_addr": target, "title": lure}
        sender = f"applicant{number}@real{number}.edu.cn"
        results = f"{TRUSTED}; dkim=pass header.d=real{number}.edu.cn; dmarc=pass"
        world.deliver(mail(sender, smp_form(**who), subject=lure, headers={"Authentication-Results": results}))
    world.run()
    notices = world.mails_to(target)
    assert len(notices) == 2
    for notice in notices:
        assert is_notice(notice) and notice["Cc"] is None
        assert "evil" not in text_of(notice) and "中奖" not in text_of(notice) and "中奖" not in str(notice["Subject"])
    assert all(m["Cc"] is None for m in world.mails())


# --- 5. limits ------------------------------------------------------------------------------------------


def test_one_mailbox_under_many_spellings_counts_once(make_world: Callable[..., World]) -> None:
    world = make_world(smtp={"max_answers_per_recipient_per_day": 2})
    spellings = ["Foo.Bar@gmail.com", "foobar+grant@gmail.com", "foo.bar+x@googlemail.com", "FOOBAR@GMAIL.COM"]
    for number, sender in enumerate(spellings):
        world.deliver(mail(sender, smp_form(**{**person(number), "email_addr": sender})))
    world.run()
    answered = [m for m in world.mails() if "foo" in str(m["To"]).lower()]
    assert len(answered) == 2
    with Worker(world.settings) as bot, bot.store.sessions() as session:
        held = list(session.scalars(select(OutboxMail).where(OutboxMail.state == "suppressed")))
    assert len(held) == 2 and all("limit 2" in (row.last_reply or "") for row in held)


def test_overall_caps_hold_answers_back_and_alert_once(make_world: Callable[..., World]) -> None:
    world = make_world(security={"max_answers_per_hour": 4, "max_answers_per_domain_per_day": 2})
    senders = [f"a{n}@pku.edu.cn" for n in range(3)] + [f"b@{d}.edu.cn" for d in ("fudan", "sjtu", "zju")]
    for number, sender in enumerate(senders):
        world.deliver(mail(sender, smp_form(**{**person(number), "email_addr": sender})))
    world.run()
    answered = {str(m["To"]) for m in world.mails() if not is_notice(m) and str(m["To"]) in senders}
    assert answered == {"a0@pku.edu.cn", "a1@pku.edu.cn", "b@fudan.edu.cn", "b@sjtu.edu.cn"}
    alerts = [m for m in world.mails_to(SMP_BOX) if "上限" in str(m["Subject"])]
    assert len(alerts) == 2, "one alert for the domain cap, one for the hourly cap"

    world.deliver(mail("c@nju.edu.cn", smp_form(**{**person(9), "email_addr": "c@nju.edu.cn"})))
    world.run()
    assert world.mails_to("c@nju.edu.cn") == []
    assert len([m for m in world.mails_to(SMP_BOX) if "上限" in str(m["Subject"])]) == 2, "alerted once"
    report = status_report(world.settings)
    assert "ANSWERS PAUSED" in report and "held back in the last 24 hours" in report
    with Worker(world.settings) as bot, bot.store.sessions() as session:
        held = session.scalars(select(OutboxMail).where(OutboxMail.state == "suppressed")).all()
    assert len(held) == 3, "held back, recorded, not lost"


# --- 6. bounded work ------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_million_character_field_is_decided_at_once_and_nobody_waits(make_world: Callable[..., World]) -> None:
    world = make_world()
    huge = world.deliver(
        mail("big@pku.edu.cn", smp_form(**{**person(1), "institution": "北京大学" + noise(1_000_000)}))
    )
    world.deliver(mail("normal@fudan.edu.cn", smp_form(**{**person(2), "email_addr": "normal@fudan.edu.cn"})))
    with Worker(world.settings) as bot:
        started = time.monotonic()
        summary = bot.single_pass()
        elapsed = time.monotonic() - started
        stored = bot.pipeline.timings.snapshot()["store"]
    assert summary.errors == []
    assert stored.seconds < 2.0, f"deciding and storing two messages took {stored.seconds:.1f} s"
    assert elapsed < 60, f"the normal message behind it waited {elapsed:.0f} s"
    decided = world.message(huge)
    assert decided.outcome == "accepted" and "value-cut" in (decided.decision or {})["flags"]
    assert "institution: 1000004 characters cut to the cap of 500" in (decided.decision or {})["matched"]["values_cut"]
    assert len(world.mails_to("normal@fudan.edu.cn")) == 1


def test_deciding_over_its_time_budget_goes_to_review(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mailbot.identity.identity_of

    def slow_for_one(values: dict[str, object], sender: str | None, aliases: dict[str, str]) -> Identity:
        if values.get("applicant_name") == "慢慢":
            time.sleep(4)
        return real(values, sender, aliases)

    monkeypatch.setattr(mailbot.deciding, "identity_of", slow_for_one)
    world = make_world(security={"decide_budget_s": 1.0})
    slow = world.deliver(mail("slow@pku.edu.cn", smp_form(**{**person(1), "name": "慢慢"})))
    normal = world.deliver(mail("normal@fudan.edu.cn", smp_form(**{**person(2), "email_addr": "normal@fudan.edu.cn"})))
    world.run()
    overran = world.message(slow)
    assert (overran.state, overran.reason) == (MessageState.REVIEW, "timeout")
    assert world.message(normal).outcome == "accepted"
    assert len(world.mails_to("normal@fudan.edu.cn")) == 1


def test_a_stopped_reader_is_not_followed_by_decoding_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import parsers.sandbox

    decoded_here: list[int] = []

    def refuse(raw: bytes, limits: object = None) -> list[object]:
        decoded_here.append(len(raw))
        raise AssertionError("the hostile message was decoded in the supervising process")

    monkeypatch.setattr(parsers.sandbox, "extract_parts", refuse, raising=False)
    raw = mail("big@pku.edu.cn", smp_form(**{**person(1), "institution": "北京大学" + noise(1_000_000)}))
    spec = make_spec()
    # a limit no reader of a megabyte-long form can meet, however fast the machine: the reader is stopped
    with ParserPool(1, timeout_s=0.01) as pool:
        submission = pool.submit(raw, spec).result(timeout=90)
    assert decoded_here == []
    assert submission.unreadable is not None and submission.unreadable.reason == "timeout"
    assert submission.envelope.from_addr == "big@pku.edu.cn"
    assert len(submission.attachments) == 1, "listed by a limited child"


def make_spec() -> Any:
    from mailbot.config import load_settings

    return load_settings(Path(__file__).resolve().parent.parent / "config.example.toml").call[0].form_spec


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds ``lines`` as written (control characters included)."""
    content = ("BT /F1 11 Tf 50 780 Td 14 TL\n" + "".join(f"({line}) '\n" for line in lines) + "ET").encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def test_a_control_character_breaks_no_export_and_no_digest(make_world: Callable[..., World]) -> None:
    world = make_world()
    lines = [
        "Project Title: Bell\x07 ringing\x0b large models",
        "PI Name: Wei Zhang",
        "Title: Professor",
        "Degree: PhD",
        "Institution: Tsinghua University\x01",
        "Email: zw@tsinghua.edu.cn",
        "Phone: 13812345678",
        "Topic No.: ANT-01",
        "Budget (10k CNY): 20",
    ]
    pdf_part = mime_part(_pdf(lines), "application/pdf", b'attachment; filename="proposal.pdf"')
    raw = mail("zw@tsinghua.edu.cn", None, to=CAAI_BOX, extra_parts=(pdf_part,))
    submitted = world.deliver(raw, box=CAAI_BOX, arrival=datetime(2024, 5, 20, 10, 0, tzinfo=BEIJING))
    world.run()
    assert world.message(submitted).outcome in ("accepted", "incomplete")
    with Worker(world.settings) as bot, bot.store.sessions() as session:
        workbook = openpyxl.load_workbook(io.BytesIO(to_xlsx(session)))
        cells = [str(c.value) for sheet in workbook.worksheets for row in sheet.iter_rows() for c in row if c.value]
        assert any("Bell ringing large models" in value for value in cells)
        assert not any(ch in value for value in cells for ch in "\x01\x07\x0b")
        call = world.settings.call_by_id("caai-ant-2024")
        data = build_digest(session, world.settings, call, datetime(2024, 5, 21).date(), datetime.now(BEIJING))
        assert "Bell ringing" in render_digest(data, bot.templates)[2]


def test_windows_unsafe_attachment_names_are_made_safe_in_the_review_folder(make_world: Callable[..., World]) -> None:
    world = make_world()
    broken = b"PK\x03\x04 not really a word file"
    names = ["CON.docx", "a<b>c:d|e?f*g.docx", "NUL", "COM1.txt", "trailing. ", "aux.tar.gz"]
    parts = [text_part("申报表见附件")] + [
        mime_part(broken, DOCX_TYPE, b'attachment; filename="' + name.encode() + b'"') for name in names
    ]
    raw = message(parts, {"From": b"a@pku.edu.cn", "Message-ID": f"<{uuid.uuid4().hex}@t>".encode()})
    queued = world.deliver(raw)
    world.run()
    with Worker(world.settings) as bot:
        folder = bot.review.folder_of(world.message(queued))
    written = [path.name for path in (folder / "attachments").iterdir()]
    assert written, "the attachments are in the review folder"
    for name in written:
        assert windows_safe(name) == name, name
        assert name.split(".")[0].upper() not in {"CON", "NUL", "AUX", "COM1"}, name
        assert not any(ch in name for ch in '<>:"|?*') and not name.endswith((".", " ")), name
