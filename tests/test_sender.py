"""The sender: a refused SMTP login holds answers back instead of failing them for good."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.app import Bot
from mailbot.config import parse_settings
from storage.models import OutboxMail, OutboxState
from tests.conftest import ImapServer, load_corpus, make_config
from tests.support.smtp_auth import AuthSink

SMTP_USER = "min.gao@aminer.cn"
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
        with Bot(settings) as bot:
            summary = bot.run_once()
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
