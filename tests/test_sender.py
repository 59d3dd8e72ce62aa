"""The sender: a refused SMTP login holds answers back; a batch of answers is filed in Sent together."""

from __future__ import annotations

from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError
from sqlalchemy import select

from mailbot.config import parse_settings
from mailbot.embedded import SmtpSink
from mailbot.imap import MailboxClient
from mailbot.worker import Worker
from storage.models import OutboxMail, OutboxState
from tests.conftest import ImapServer, load_corpus, make_config
from tests.support.smtp_auth import AuthSink

SMTP_USER = "min.gao@aminer.cn"
SMP_BOX = "min.gao@aminer.cn"
# the test server cannot have a certificate, so it takes a login without TLS (loopback only)
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def test_a_refused_smtp_login_keeps_answers_waiting_until_it_is_fixed(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-001", "smp-002", "smp-006"])
    sink = AuthSink("the-right-one")
    sink.controller.start()
    try:
        raw = make_config(tmp_path, imap_server, sink)  # type: ignore[arg-type]
        raw["smtp"].update(user=SMTP_USER, password_env="MAILBOT_TEST_SMTP_PASSWORD")
        settings = parse_settings(raw, "test")
        monkeypatch.setenv("MAILBOT_TEST_SMTP_PASSWORD", "a-rotated-one")
        with Worker(settings) as bot:
            summary = bot.single_pass()
            assert len(summary.processed) == 3
            assert [r.state for r in summary.sent] == [OutboxState.PENDING], "one try, then the round stops"
            with bot.store.sessions() as session:
                rows = session.query(OutboxMail).all()
                assert {row.state for row in rows} == {OutboxState.PENDING}
                assert all(row.attempts <= 1 for row in rows)
            assert sink.received == []

            assert bot.send() == [], "no new login attempt straight after a refusal"
            monkeypatch.setenv("MAILBOT_TEST_SMTP_PASSWORD", "the-right-one")
            with bot.store.sessions() as session, session.begin():
                for row in session.query(OutboxMail):
                    row.next_attempt_at = row.created_at
            bot.sender._quiet_until = None  # as if the minute had passed
            sent = bot.send()
        assert [r.state for r in sent] == [OutboxState.SENT] * 3
        assert len(sink.received) == len(truth)
        # smtplib tries each mechanism the server offers (PLAIN, LOGIN) on the one refused connection
        assert sink.authenticator.logins[-1] is True and sink.authenticator.logins.count(True) == 1
        assert sink.authenticator.logins.count(False) <= 2
    finally:
        sink.controller.stop()


def test_a_batch_of_answers_is_filed_in_sent_together_and_a_filing_failure_leaves_the_sends_standing(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["smp-001", "smp-002", "smp-006", "smp-008"]
    load_corpus(imap_server, corpus_dir, names[:3])
    settings = parse_settings(make_config(tmp_path, imap_server, smtp_sink), "test")
    with Worker(settings) as bot:
        summary = bot.single_pass()
        assert [r.state for r in summary.sent] == [OutboxState.SENT] * 3
        with bot.store.sessions() as session:
            rows = session.scalars(select(OutboxMail)).all()
            assert all(row.filed_in_sent for row in rows)
            filed = sorted(row.message_id for row in rows)
        assert sorted(imap_server.message_ids(SMP_BOX, "Sent")) == filed

        def sent_folder_full(*_args: object, **_kwargs: object) -> None:
            raise IMAPClientError("APPEND failed: quota exceeded")

        monkeypatch.setattr(MailboxClient, "append_all", sent_folder_full)
        load_corpus(imap_server, corpus_dir, names[3:])
        later = bot.single_pass()
        assert [r.state for r in later.sent] == [OutboxState.SENT], "filing is a courtesy: the send stands"
        with bot.store.sessions() as session:
            row = session.get_one(OutboxMail, later.sent[0].outbox_id)
            assert row.state == OutboxState.SENT and not row.filed_in_sent
    assert len(smtp_sink.received) == 4
    assert sorted(imap_server.message_ids(SMP_BOX, "Sent")) == filed
