"""The accounts the bot reads mail from and sends it with: IMAP mailboxes, the SMTP server, OAuth2.

Secrets never live in the file: an account names the environment variables that hold them
(:func:`mailbot.config.resolve_secret` reads them when a connection is made).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from mailbot.config_section import Section

TlsMode = Literal["ssl", "starttls", "none"]
AuthMode = Literal["password", "xoauth2"]
OAuthProvider = Literal["microsoft", "google", "other"]


# Token endpoints of the identity providers that serve IMAP and SMTP with OAuth2, and the scopes a
# refresh asks for. Microsoft needs the scopes named again on every refresh (and offline_access to
# get the next refresh token); Google keeps the scope the user granted (https://mail.google.com/).
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105 - a URL
MICROSOFT_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (where plaintext is no risk)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OAuthSettings(Section):
    """How an ``auth = "xoauth2"`` account renews its access token: a refresh token and its client.

    The values themselves come from the environment variables named here, never from the file.
    """

    provider: OAuthProvider = "other"
    token_url: str | None = None
    tenant: str = "organizations"
    scope: str | None = None
    client_id_env: str
    client_secret_env: str | None = None  # public clients (a desktop-app registration) have none
    refresh_token_env: str

    @model_validator(mode="after")
    def _usable_endpoint(self) -> OAuthSettings:
        if self.provider == "other" and not self.token_url:
            raise ValueError('give token_url, or provider = "microsoft" or "google" for their token endpoint')
        if not re.fullmatch(r"[A-Za-z0-9.-]+", self.tenant):
            raise ValueError("tenant must be a directory (tenant) id, a domain, or organizations/common/consumers")
        parts = urlsplit(self.endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise ValueError(f"token_url must be an https:// URL (http:// only on loopback): {self.endpoint}")
        return self

    @property
    def endpoint(self) -> str:
        """The token endpoint: ``token_url`` if given, else the provider's."""
        if self.token_url:
            return self.token_url
        if self.provider == "microsoft":
            return MICROSOFT_TOKEN_URL.format(tenant=self.tenant)
        return GOOGLE_TOKEN_URL

    @property
    def scopes(self) -> str | None:
        """The scope a refresh asks for (None: the one granted with the refresh token)."""
        if self.scope is not None:
            return self.scope or None
        return MICROSOFT_SCOPE if self.provider == "microsoft" else None


def _check_credentials(section: MailboxSettings | SmtpSettings) -> None:
    """The secrets an account's ``auth`` needs are named; an ``oauth`` table only goes with xoauth2."""
    if section.oauth is not None and section.auth != "xoauth2":
        raise ValueError('an oauth table needs auth = "xoauth2"')
    if section.oauth is None and not section.password_env:
        needed = "password_env (an access token), or an oauth table" if section.auth == "xoauth2" else "password_env"
        raise ValueError(f"needs {needed}")


class MailboxSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    host: str
    port: int = Field(default=993, gt=0, lt=65536)
    tls: TlsMode = "ssl"
    verify_certificate: bool = True
    user: str
    password_env: str | None = None
    auth: AuthMode = "password"
    oauth: OAuthSettings | None = None
    folder: str = "INBOX"
    processed_folder: str | None = None
    review_folder: str | None = None
    sent_folder: str = "Sent"
    poll_interval_s: float = Field(default=60.0, gt=0)
    idle: bool = True
    batch_size: int = Field(default=25, ge=1, le=1000)
    calls: list[str] = Field(min_length=1)
    send_id: bool = True

    @model_validator(mode="after")
    def _credentials(self) -> MailboxSettings:
        _check_credentials(self)
        return self


class SmtpSettings(Section):
    host: str
    port: int = Field(default=465, gt=0, lt=65536)
    tls: TlsMode = "ssl"
    verify_certificate: bool = True
    user: str | None = None
    password_env: str | None = None
    auth: AuthMode = "password"
    oauth: OAuthSettings | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    retry_for_hours: float = Field(default=48.0, gt=0)
    saves_to_sent: bool = False
    max_answers_per_recipient_per_day: int = Field(default=5, ge=1)
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: str | None = None

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSettings:
        # without a password_env (and auth = "password") the server is used without a login
        if self.auth == "xoauth2" and not self.user:
            raise ValueError('auth = "xoauth2" needs user')
        if self.auth == "xoauth2" or self.oauth is not None:
            _check_credentials(self)
        return self
