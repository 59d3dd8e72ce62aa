"""OAuth2 mailboxes unattended: access tokens renewed from a refresh token, against real servers.

A loopback identity provider (tests/support/oauth_provider.py) issues short-lived access tokens and
counts every refresh; Dovecot's ``oauth2`` passdb and an aiosmtpd server with an XOAUTH2 handler
ask its introspection endpoint about each token, so an expired or revoked token is refused as a
provider's servers would refuse it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imapclient
import pytest
import tomli_w
from imapclient.exceptions import LoginError

from mailbot.admin.checks import run_checks
from mailbot.admin.status import status_report
from mailbot.clock import utcnow
from mailbot.config import ConfigError, Settings, parse_settings
from mailbot.config_accounts import OAuthSettings
from mailbot.digest.contents import build_digest
from mailbot.digest.render import render_digest
from mailbot.imap import MailboxClient, MailboxUnavailable
from mailbot.logs import SecretMask, configured_secrets, mask_from_now_on
from mailbot.oauth import Credentials, RefreshingToken, TokenRefused
from mailbot.smtp import connect_smtp
from mailbot.worker import Worker
from storage.models import OutboxMail, OutboxState
from templates import TemplateSet
from tests.conftest import MAILBOX_USERS, PASSWORD, ImapServer, _missing, load_corpus, make_config
from tests.support.dovecot import DovecotServer, dovecot_binary
from tests.support.oauth_provider import CLIENT_ID, CLIENT_SECRET, OAuthProvider
from tests.support.smtp_auth import XOAuth2Sink

pytestmark = [
    pytest.mark.dovecot,
    # the test SMTP server cannot have a certificate, so it takes a login without TLS (loopback only)
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

SMP_USER, CAAI_USER = MAILBOX_USERS
CLIENT_ID_ENV = "MAILBOT_TEST_OAUTH_CLIENT_ID"
CLIENT_SECRET_ENV = "MAILBOT_TEST_OAUTH_CLIENT_SECRET"
WAIT_S = 60.0


def refresh_token_env(mailbox: str) -> str:
    return f"MAILBOT_TEST_{mailbox.upper()}_REFRESH_TOKEN"


def oauth_table(provider: OAuthProvider, mailbox: str) -> dict[str, str]:
    return {
        "token_url": provider.token_url,
        "client_id_env": CLIENT_ID_ENV,
        "client_secret_env": CLIENT_SECRET_ENV,
        "refresh_token_env": refresh_token_env(mailbox),
    }


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.1)


@pytest.fixture
def provider() -> Iterator[OAuthProvider]:
    with OAuthProvider() as running:
        yield running


@pytest.fixture
def oauth_dovecot(provider: OAuthProvider) -> Iterator[ImapServer]:
    """Dovecot taking XOAUTH2 logins checked against the provider (and passwords, for the test's own use)."""
    if dovecot_binary() is None:
        _missing("dovecot is not installed (apt-get install dovecot-imapd): its oauth2 passdb is what is tested")
    server = DovecotServer(dict.fromkeys(MAILBOX_USERS, PASSWORD))
    server.accept_oauth2(provider.introspection_url)
    server.start()
    try:
        yield ImapServer("dovecot", server.host, server.port, server)
    finally:
        server.stop()


@pytest.fixture
def oauth_smtp(provider: OAuthProvider) -> Iterator[XOAuth2Sink]:
    sink = XOAuth2Sink(provider.active_user)
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()


class Accounts:
    """The test configuration: both mailboxes and SMTP on OAuth2, each mailbox with its own grant."""

    def __init__(
        self,
        tmp_path: Path,
        imap: ImapServer,
        smtp: XOAuth2Sink,
        provider: OAuthProvider,
        monkeypatch: pytest.MonkeyPatch,
        **sections: dict[str, Any],
    ) -> None:
        self.provider = provider
        self.monkeypatch = monkeypatch
        raw = make_config(tmp_path, imap, smtp, **sections)  # type: ignore[arg-type]
        self.grants: dict[str, int] = {}
        for box in raw["mailbox"]:
            box.pop("password_env")
            box.update(auth="xoauth2", oauth=oauth_table(provider, box["name"]))
            self.authorise(box["name"], box["user"])
        # SMTP sends as the smp mailbox with the same refresh token: the two share one access token
        raw["smtp"].update(user=SMP_USER, auth="xoauth2", oauth=oauth_table(provider, "smp"))
        monkeypatch.setenv(CLIENT_ID_ENV, CLIENT_ID)
        monkeypatch.setenv(CLIENT_SECRET_ENV, CLIENT_SECRET)
        self.raw = raw
        self.settings = parse_settings(raw, "test")

    def authorise(self, mailbox: str, user: str) -> str:
        """A (new) grant for the mailbox, its refresh token in the environment; returns the token."""
        self.grants[mailbox], token = self.provider.grant(user)
        self.monkeypatch.setenv(refresh_token_env(mailbox), token)
        return token

    def refreshes(self, mailbox: str) -> int:
        return self.provider.token_requests[self.grants[mailbox]]


def answers(settings: Settings) -> list[tuple[str, str]]:
    with Worker(settings, inline=True) as bot, bot.store.sessions() as session:
        return sorted((row.message_id, row.state) for row in session.query(OutboxMail).filter_by(kind="ack"))


# --- the token itself -----------------------------------------------------------------------------


def test_an_access_token_is_kept_until_shortly_before_it_expires_and_renewed_once_for_all_threads(
    provider: OAuthProvider,
) -> None:
    grant, refresh_token = provider.grant(SMP_USER)
    settings = OAuthSettings(token_url=provider.token_url, client_id_env="X", refresh_token_env="Y")
    now = [1000.0]
    token = RefreshingToken(settings, SMP_USER, CLIENT_ID, CLIENT_SECRET, refresh_token, clock=lambda: now[0])

    first = token.secret()
    assert provider.active_user(first) == SMP_USER
    now[0] += 3600 - 300 - 1  # the provider said 3600 s; five minutes before that it is still used
    assert token.secret() == first
    assert provider.token_requests[grant] == 1

    now[0] += 2  # then every thread that needs it at once waits for one renewal
    seen: list[str] = []
    together = threading.Barrier(8)

    def take() -> None:
        together.wait()
        seen.append(token.secret())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert provider.token_requests[grant] == 2
    assert len(set(seen)) == 1 and seen[0] != first
    # a connection refused with the old token while another renewed it takes the new one as it is
    assert token.renew(first) == seen[0]
    assert provider.token_requests[grant] == 2
    # the provider's newest refresh token is the one used next (Microsoft hands out a new one each time)
    assert token.renew(seen[0]) != seen[0]
    assert provider.token_requests[grant] == 3


def test_a_refused_client_is_reported_by_name_and_the_endpoint_is_not_asked_again_at_once(
    provider: OAuthProvider,
) -> None:
    grant, refresh_token = provider.grant(SMP_USER)
    settings = OAuthSettings(
        token_url=provider.token_url, client_id_env="ID_ENV", client_secret_env="SECRET_ENV", refresh_token_env="RT"
    )
    states: list[tuple[str, str]] = []
    token = RefreshingToken(
        settings,
        SMP_USER,
        CLIENT_ID,
        "an-expired-secret",
        refresh_token,
        lambda _settings, state, said: states.append((state, said)),
    )
    for _ in range(5):
        with pytest.raises(TokenRefused, match=r"client refused .* ID_ENV and the secret in SECRET_ENV") as caught:
            token.secret()
        assert caught.value.state == "client-refused"
    assert provider.token_requests[grant] == 1
    assert states == [("client-refused", "invalid_client: unknown client or wrong secret")]


def test_tokens_learned_while_running_are_masked_in_the_log() -> None:
    mask = SecretMask(["configured-password"])
    mask_from_now_on("at-1-0123456789abcdef")
    assert mask.mask("login with at-1-0123456789abcdef and configured-password") == "login with ******** and ********"


# --- configuration ----------------------------------------------------------------------------------


EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _example_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    change(raw)
    return raw


OAUTH = {"provider": "microsoft", "client_id_env": "ID", "refresh_token_env": "RT"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda raw: raw["mailbox"][0].update(oauth=OAUTH), 'oauth table needs auth = "xoauth2"'),
        (
            lambda raw: raw["mailbox"][0].update(auth="xoauth2", oauth={**OAUTH, "provider": "other"}),
            "give token_url",
        ),
        (
            lambda raw: raw["mailbox"][0].update(
                auth="xoauth2", oauth={**OAUTH, "token_url": "http://login.example.org/token"}
            ),
            "token_url must be an https:// URL",
        ),
        (lambda raw: raw["mailbox"][0].update(auth="xoauth2", oauth={"provider": "google"}), "refresh_token_env"),
        (lambda raw: raw["mailbox"][0].pop("password_env"), "[[mailbox]] #1 (smp): needs password_env"),
        (lambda raw: raw["smtp"].update(auth="xoauth2", password_env=None), 'auth = "xoauth2" needs user'),
        (
            lambda raw: raw["mailbox"][0].update(auth="xoauth2", oauth={**OAUTH, "tenant": "a/../b"}),
            "tenant must be",
        ),
    ],
)
def test_oauth_settings_are_checked_with_clear_messages(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    raw = _example_with(change)
    if raw["smtp"].get("password_env") is None:
        raw["smtp"].pop("password_env", None)
        raw["smtp"].pop("user")
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, "mailbot.toml")
    assert expected in str(caught.value)


def test_provider_presets_name_the_token_endpoints() -> None:
    def use(provider: str, **extra: str) -> Callable[[dict[str, Any]], None]:
        def change(raw: dict[str, Any]) -> None:
            box = raw["mailbox"][0]
            box.pop("password_env")
            box.update(auth="xoauth2", oauth={**OAUTH, "provider": provider, **extra})

        return change

    microsoft = parse_settings(_example_with(use("microsoft", tenant="contoso.onmicrosoft.com"))).mailbox[0].oauth
    assert microsoft is not None
    assert microsoft.endpoint == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert microsoft.scopes is not None and "IMAP.AccessAsUser.All" in microsoft.scopes
    google = parse_settings(_example_with(use("google"))).mailbox[0].oauth
    assert google is not None
    assert (google.endpoint, google.scopes) == ("https://oauth2.googleapis.com/token", None)


def test_the_example_configurations_oauth_tables_are_valid() -> None:
    """The commented-out [smtp.oauth] and [mailbox.oauth] of config.example.toml, switched on."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    switched_on, inside = [], False
    for line in lines:
        if line in ("# [smtp.oauth]", "# [mailbox.oauth]"):
            inside = True
        elif not line.startswith("#"):
            inside = False
        switched_on.append(line.removeprefix("# ") if inside else line)
    raw = tomllib.loads("\n".join(switched_on))
    for account in (raw["smtp"], raw["mailbox"][0]):
        account.update(auth="xoauth2")
        account.pop("password_env")
    settings = parse_settings(raw, "config.example.toml")
    smtp_oauth, box_oauth = settings.smtp.oauth, settings.mailbox[0].oauth
    assert smtp_oauth is not None and box_oauth is not None
    assert smtp_oauth.endpoint == "https://idp.example.org/oauth2/token"
    assert box_oauth.endpoint == "https://oauth2.googleapis.com/token"


def test_oauth_secrets_are_masked_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def use_oauth(raw: dict[str, Any]) -> None:
        raw["mailbox"][0].update(auth="xoauth2", oauth={**OAUTH, "client_secret_env": "CLIENT_SECRET"})

    settings = parse_settings(_example_with(use_oauth))
    for name, value in {"CLIENT_SECRET": "s3cret-of-the-client", "RT": "rt-0123456789", "ID": "not-a-secret"}.items():
        monkeypatch.setenv(name, value)
    masked = configured_secrets(settings.secret_env_names)
    assert {"s3cret-of-the-client", "rt-0123456789"} <= set(masked)
    assert "not-a-secret" not in masked


# --- against Dovecot and an SMTP server ----------------------------------------------------------


def test_a_refused_imap_login_renews_the_access_token_exactly_once(
    tmp_path: Path,
    oauth_dovecot: ImapServer,
    oauth_smtp: XOAuth2Sink,
    provider: OAuthProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accounts = Accounts(tmp_path, oauth_dovecot, oauth_smtp, provider, monkeypatch)
    box = accounts.settings.mailbox_by_name("smp")
    credentials = Credentials(accounts.settings)
    with MailboxClient(box, credentials.of(box)) as client:
        assert client.select("INBOX").exists == 0
    assert accounts.refreshes("smp") == 1

    # the provider ends the access token early (a password change): the cached one is refused once
    provider.end_access_tokens(accounts.grants["smp"])
    with MailboxClient(box, credentials.of(box)) as client:
        client.select("INBOX")
    assert accounts.refreshes("smp") == 2
    # SMTP shares the smp refresh token, so it takes the token just renewed as it is
    connect_smtp(accounts.settings, credentials=credentials).quit()
    assert accounts.refreshes("smp") == 2
    assert oauth_smtp.logins == [(SMP_USER, True)]
    # and SMTP renews it the same way when the server refuses it
    provider.end_access_tokens(accounts.grants["smp"])
    connect_smtp(accounts.settings, credentials=credentials).quit()
    assert accounts.refreshes("smp") == 3
    assert oauth_smtp.logins == [(SMP_USER, True), (SMP_USER, False), (SMP_USER, True)]

    # Dovecot makes each failed login from one address wait longer (2, 4, 8, 15 s): a fresh start forgets
    server = oauth_dovecot.server
    assert isinstance(server, DovecotServer)
    server.restart()
    # a server that refuses even a fresh token: one renewal, one more try, then the login fails
    provider.bar(SMP_USER)
    with pytest.raises(MailboxUnavailable, match=r"the server refused the login as min\.gao@aminer\.cn"):
        MailboxClient(box, credentials.of(box)).connect()
    assert accounts.refreshes("smp") == 4
    provider.bar(SMP_USER, barred=False)

    # a revoked grant: the renewal itself is refused, and says what to do
    server.restart()
    provider.revoke(accounts.grants["smp"])
    with pytest.raises(MailboxUnavailable, match=r"OAuth2 refresh token revoked — re-authorise min\.gao@aminer\.cn"):
        MailboxClient(box, credentials.of(box)).connect()
    assert accounts.refreshes("smp") == 5
    # the caai mailbox has its own grant, untouched
    caai = accounts.settings.mailbox_by_name("caai")
    with MailboxClient(caai, credentials.of(caai)):
        pass
    assert accounts.refreshes("caai") == 1


def test_a_fixed_access_token_logs_in_to_smtp_with_xoauth2(
    tmp_path: Path,
    oauth_dovecot: ImapServer,
    oauth_smtp: XOAuth2Sink,
    provider: OAuthProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auth = "xoauth2"`` with an access token in password_env: SMTP really logs in, then sends."""
    _grant, refresh_token = provider.grant(SMP_USER)
    settings = OAuthSettings(token_url=provider.token_url, client_id_env="X", refresh_token_env="Y")
    access_token = RefreshingToken(settings, SMP_USER, CLIENT_ID, CLIENT_SECRET, refresh_token).secret()
    raw = make_config(tmp_path, oauth_dovecot, oauth_smtp)  # type: ignore[arg-type]
    raw["smtp"].update(user=SMP_USER, auth="xoauth2", password_env="MAILBOT_TEST_SMTP_TOKEN")
    monkeypatch.setenv("MAILBOT_TEST_SMTP_TOKEN", access_token)
    smtp = connect_smtp(parse_settings(raw, "test"))
    try:
        # AUTH before EHLO is answered "503 send HELO first", which smtplib takes for "already logged in"
        assert oauth_smtp.logins == [(SMP_USER, True)]
        smtp.sendmail(SMP_USER, ["someone@example.org"], b"Subject: hello\r\n\r\nhi\r\n")
    finally:
        smtp.quit()
    assert len(oauth_smtp.received) == 1


def test_a_fixed_access_token_stops_working_when_it_expires(oauth_dovecot: ImapServer, provider: OAuthProvider) -> None:
    """What ``auth = "xoauth2"`` without an oauth table comes to, and what the Dovecot set-up enforces."""
    provider.lifetime_s = 1
    _grant, refresh_token = provider.grant(SMP_USER)
    settings = OAuthSettings(token_url=provider.token_url, client_id_env="X", refresh_token_env="Y")
    token = RefreshingToken(settings, SMP_USER, CLIENT_ID, CLIENT_SECRET, refresh_token).secret()
    client = imapclient.IMAPClient(oauth_dovecot.host, port=oauth_dovecot.port, ssl=False, timeout=30)
    client.oauth2_login(SMP_USER, token)
    client.logout()
    time.sleep(1.2)
    client = imapclient.IMAPClient(oauth_dovecot.host, port=oauth_dovecot.port, ssl=False, timeout=30)
    with pytest.raises(LoginError):
        client.oauth2_login(SMP_USER, token)
    client.shutdown()


def test_a_long_run_outlives_its_access_tokens(
    tmp_path: Path,
    oauth_dovecot: ImapServer,
    oauth_smtp: XOAuth2Sink,
    provider: OAuthProvider,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tokens of four seconds, mail in two waves further apart: all of it taken in and answered."""
    provider.lifetime_s = 4
    accounts = Accounts(tmp_path, oauth_dovecot, oauth_smtp, provider, monkeypatch, mailbox={"poll_interval_s": 0.5})
    server = oauth_dovecot.server
    assert isinstance(server, DovecotServer)
    load_corpus(oauth_dovecot, corpus_dir, ["smp-001", "caai-002"])
    bot = Worker(accounts.settings, inline=True)
    running = threading.Thread(target=bot.run_until_stopped, name="bot")
    running.start()
    try:
        wait_until(lambda: len(oauth_smtp.received) == 2, "the first wave's answers")
        refreshed_before = {name: accounts.refreshes(name) for name in ("smp", "caai")}
        time.sleep(4.5)  # every access token issued so far has expired
        # servers drop connections (Gmail after a day, any of them on a restart): the bot logs in anew
        server.restart()
        load_corpus(oauth_dovecot, corpus_dir, ["smp-002", "caai-003"])
        wait_until(lambda: len(oauth_smtp.received) == 4, "the second wave's answers")
    finally:
        bot.stop()
        running.join(timeout=60)
        bot.close()
    assert not running.is_alive()
    for name in ("smp", "caai"):
        assert accounts.refreshes(name) > refreshed_before[name], f"{name}: its token was renewed"
    # renewed before it expired, not after a refusal: no login was ever offered a dead token
    assert oauth_smtp.logins and all(granted for _user, granted in oauth_smtp.logins)
    assert provider.introspections and all(active for _user, active in provider.introspections)
    states = answers(accounts.settings)
    assert len(states) == 4 and {state for _id, state in states} == {OutboxState.SENT}


def test_a_revoked_refresh_token_shows_in_status_and_the_digest_and_the_endpoint_is_asked_once(
    tmp_path: Path,
    oauth_dovecot: ImapServer,
    oauth_smtp: XOAuth2Sink,
    provider: OAuthProvider,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accounts = Accounts(tmp_path, oauth_dovecot, oauth_smtp, provider, monkeypatch, mailbox={"poll_interval_s": 0.5})
    settings = accounts.settings
    load_corpus(oauth_dovecot, corpus_dir, ["smp-001"])
    with Worker(settings, inline=True) as bot:
        summary = bot.single_pass()
    assert [result.state for result in summary.sent] == [OutboxState.SENT]
    assert "refresh token accepted" in status_report(settings)

    provider.revoke(accounts.grants["smp"])
    load_corpus(oauth_dovecot, corpus_dir, ["smp-002", "caai-002"])
    revoked_at = accounts.refreshes("smp")
    bot = Worker(settings, inline=True)
    running = threading.Thread(target=bot.run_until_stopped, name="bot")
    running.start()
    try:
        # caai's mail comes in and is decided; its answer waits, as SMTP uses the revoked smp grant
        wait_until(lambda: bool(_outbox_states(bot)), "caai's message decided")
        time.sleep(8)  # the smp intake thread retries at 1, 2, 4 s; the sender tries its round
    finally:
        bot.stop()
        running.join(timeout=60)
        bot.close()
    assert accounts.refreshes("smp") == revoked_at + 1, "one question to the token endpoint, not one per retry"
    assert len(oauth_smtp.received) == 1, "caai's answer waits for SMTP to be re-authorised"

    status = status_report(settings)
    advice = "OAuth2 refresh token revoked — re-authorise min.gao@aminer.cn"
    assert re.search(f"mailbox smp +{advice}", status), status
    assert re.search(f"SMTP +{advice}", status)
    assert re.search("mailbox caai +refresh token accepted", status)
    assert "NOW FAILING" in status and refresh_token_env("smp") in status

    templates = TemplateSet(settings.templates.dir)
    now = utcnow()
    with Worker(settings, inline=True) as bot, bot.store.sessions() as session:
        smp_digest = build_digest(session, settings, settings.call_by_id("smp-zhipu-2024"), now.date(), now)
        caai_digest = build_digest(session, settings, settings.call_by_id("caai-ant-2024"), now.date(), now)
    assert [(p.account, p.state) for p in smp_digest.token_problems] == [
        ("mailbox smp", "revoked"),
        ("SMTP", "revoked"),
    ]
    assert [p.account for p in caai_digest.token_problems] == ["SMTP"]
    _subject, text, html = render_digest(smp_digest, templates)
    assert "OAuth2 refresh token revoked — re-authorise" in text and "mailbox smp" in text
    assert "OAuth2 刷新令牌已被吊销" in html and refresh_token_env("smp") in html

    # re-authorised: a new refresh token in the environment and a restart, and all is well again
    accounts.authorise("smp", SMP_USER)
    with Worker(settings, inline=True) as bot:
        summary = bot.single_pass()
        assert [result.state for result in summary.sent] == [OutboxState.SENT], "smp's new message"
        with bot.store.sessions() as session, session.begin():
            for row in session.query(OutboxMail).filter_by(state=OutboxState.PENDING):
                row.next_attempt_at = row.created_at  # as if the minute of waiting after the refusal had passed
        assert [result.state for result in bot.send()] == [OutboxState.SENT], "caai's, held back meanwhile"
    assert len(oauth_smtp.received) == 3
    assert "revoked" not in status_report(settings)


def _outbox_states(bot: Worker) -> list[str]:
    with bot.store.sessions() as session:
        return [row.state for row in session.query(OutboxMail)]


def test_check_reports_oauth_settings_and_never_prints_a_secret(
    tmp_path: Path,
    oauth_dovecot: ImapServer,
    oauth_smtp: XOAuth2Sink,
    provider: OAuthProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accounts = Accounts(tmp_path, oauth_dovecot, oauth_smtp, provider, monkeypatch)
    lines = {line.what.split(" (")[0]: line for line in run_checks(accounts.settings)}
    assert lines["mailbox smp"].ok and f"renewed at {provider.token_url}" in lines["mailbox smp"].detail
    assert lines["SMTP 127.0.0.1:" + str(oauth_smtp.port)].ok

    provider.revoke(accounts.grants["caai"])
    monkeypatch.delenv(refresh_token_env("smp"))
    path = tmp_path / "mailbot.toml"
    path.write_text(tomli_w.dumps(accounts.raw))
    done = subprocess.run(
        [sys.executable, "-m", "mailbot", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"environment variable {refresh_token_env('smp')} is not set" in output
    assert "OAuth2 refresh token revoked — re-authorise myjj@caai.cn" in output
    for secret in (CLIENT_SECRET, *(value for name, value in os.environ.items() if name.endswith("_REFRESH_TOKEN"))):
        assert secret not in output
