"""The SMTP conversation: a connected, logged-in session, and one message sent with its end held back.

``SmtpTransport.send`` splits the DATA phase before its final line, so the caller can record the
hand-over just before the server may keep the message; the failures it raises say whether trying
again later can help (``TemporaryFailure``) or not (``PermanentFailure``), and whether no answer
can go out until an operator fixes the login (``LoginRefused``).
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable

from mailbot.config import ConfigError, Settings
from mailbot.imap import tls_context, warn_if_plaintext
from mailbot.oauth import Credential, Credentials, TokenRefused
from storage.failpoints import failpoint

log = logging.getLogger(__name__)

DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class LoginRefused(TemporaryFailure):
    """No answer can go out until the SMTP credentials are fixed: stop the round, keep the rows."""


def connect_smtp(
    settings: Settings, timeout_s: float | None = None, credentials: Credentials | None = None
) -> smtplib.SMTP:
    """A connected, logged-in SMTP session as ``[smtp]`` describes it (certificates verified)."""
    cfg = settings.smtp
    timeout = timeout_s or cfg.timeout_s
    warn_if_plaintext("smtp", "server", cfg.host, cfg.tls)
    smtp: smtplib.SMTP
    if cfg.tls == "ssl":
        smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=timeout, context=tls_context(cfg.verify_certificate))
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        if cfg.tls == "starttls":
            smtp.starttls(context=tls_context(cfg.verify_certificate))
    if smtp.sock is not None:
        # the final line goes out as its own small write: without this, Nagle's algorithm holds
        # it until the server acknowledges the body (tens of milliseconds per message)
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cfg.user and (cfg.password_env or cfg.oauth):
        try:
            credential = (credentials or Credentials(settings)).of(cfg)
            if cfg.auth == "xoauth2":
                _xoauth2_login(smtp, cfg.user, credential)
            else:
                smtp.login(cfg.user, credential.secret())
        except (smtplib.SMTPAuthenticationError, ConfigError, TokenRefused):
            smtp.close()
            raise
    return smtp


def _xoauth2_login(smtp: smtplib.SMTP, user: str, credential: Credential) -> None:
    """AUTH XOAUTH2; a refused access token is renewed once and offered again on the same connection."""

    def offer(token: str) -> None:
        answer = f"user={user}\x01auth=Bearer {token}\x01\x01"
        # a refusal comes as a challenge carrying the server's reason: the client answers it empty
        smtp.auth("XOAUTH2", lambda challenge=None: answer if challenge is None else "")

    # unlike login(), auth() does not say EHLO first, and takes the "503 send HELO first" that
    # follows for "already authenticated": every send would then be refused for want of a login
    smtp.ehlo_or_helo_if_needed()
    token = credential.secret()
    try:
        offer(token)
    except smtplib.SMTPAuthenticationError:
        renewed = credential.renew(token)
        if renewed is None:
            raise
        log.info("the SMTP server refused the access token: trying once with a renewed one")
        offer(renewed)


class SmtpTransport:
    """One SMTP connection per flush, opened lazily and reused for every message in it."""

    def __init__(self, settings: Settings, credentials: Credentials | None = None) -> None:
        self.settings = settings
        self.credentials = credentials or Credentials(settings)
        self._smtp: smtplib.SMTP | None = None
        self.login_refused = False

    def send(self, sender: str, recipients: list[str], raw: bytes, before_end: Callable[[], None]) -> str:
        """Send one message; ``before_end`` runs just before the end of the data is handed over.

        Until the final "." the server keeps nothing (a broken connection aborts the transaction);
        from it on, the server may have accepted the message even if its reply never arrives.
        """
        try:
            if self._smtp is None:
                self._smtp = connect_smtp(self.settings, credentials=self.credentials)
            refused = self._transaction(self._smtp, sender, recipients, raw, before_end)
        except (smtplib.SMTPAuthenticationError, ConfigError) as exc:
            # a wrong or rotated password is the operator's to fix, not the answer's fault
            self.close()
            raise LoginRefused(f"the SMTP server refused the login: {exc}") from None
        except TokenRefused as exc:
            self.close()
            raise LoginRefused(f"SMTP: {exc}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(
                f"{rcpt}: {code} {msg.decode(errors='replace')}" for rcpt, (code, msg) in exc.recipients.items()
            )
            if all(code >= 500 for code in codes):
                raise PermanentFailure(detail) from None
            raise TemporaryFailure(detail) from None
        except smtplib.SMTPResponseException as exc:
            self.close()
            error = exc.smtp_error
            text = f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
            if exc.smtp_code >= 500:
                raise PermanentFailure(text) from None
            raise TemporaryFailure(text) from None
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self.close()
            raise TemporaryFailure(f"{exc.__class__.__name__}: {exc}") from None
        except BaseException:
            # ``before_end`` failed (the database went away): in the middle of the data a QUIT would
            # be read as more of the message and wait out the timeout; the server drops the rest
            self._abandon()
            raise
        if refused:
            return "accepted except " + ", ".join(refused)
        return "250 accepted"

    @staticmethod
    def _transaction(
        smtp: smtplib.SMTP, sender: str, recipients: list[str], raw: bytes, before_end: Callable[[], None]
    ) -> dict[str, tuple[int, bytes]]:
        """smtplib's sendmail, with the DATA phase split before its final line."""
        smtp.ehlo_or_helo_if_needed()
        failpoint("smtp.mail")
        code, reply = smtp.mail(sender)
        if code != 250:
            smtp.rset()
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            failpoint("smtp.rcpt")
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            smtp.rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        failpoint("smtp.data")
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            smtp.rset()
            raise smtplib.SMTPDataError(code, reply)
        body = DOT_AT_LINE_START.sub(b"..", raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        smtp.send(body)
        before_end()
        failpoint("smtp.final")
        smtp.send(b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return refused

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _abandon(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()
