"""Access tokens for ``auth = "xoauth2"`` accounts, renewed from a refresh token before they expire.

An account with an ``oauth`` table gets a :class:`RefreshingToken`: it asks the provider's token
endpoint for an access token, keeps it until shortly before it expires, and asks again; one per
refresh token in a configuration (:class:`Credentials`), shared by every IMAP IDLE thread and the
sender, so they renew it once between them. A server that refuses a token still thought valid
(the provider revoked it early) gets one renewed token and one more try (:meth:`RefreshingToken.renew`).

The refresh goes through authlib: its ``OAuth2Session.refresh_token`` is the plain refresh grant
of RFC 6749 (section 6), so one code path serves Microsoft's identity platform, Google and any
other provider by its token endpoint alone. msal speaks only to Microsoft and google-auth only to
Google: a fund office with a Microsoft 365 mailbox and a Gmail one would need both, with two ways
of caching and of reporting a dead refresh token.

A refresh token the provider no longer honours (``invalid_grant``: revoked, expired, the password
changed) or a client it refuses (``invalid_client``: an expired client secret) cannot heal by
asking again: the endpoint is asked at most once an hour after that, and the state is recorded
(``EventKind.OAUTH_REFRESH``) for ``mailbot status`` and the coordinators' digest
(:func:`token_problems`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from sqlalchemy.orm import Session

from mailbot.config import Settings, resolve_secret, secret_from_env
from mailbot.config_accounts import MailboxSettings, OAuthSettings, SmtpSettings
from mailbot.logs import mask_from_now_on
from storage import Storage
from storage.db import transaction
from storage.events import EventKind, add_event
from storage.tokens import latest_token_states

log = logging.getLogger(__name__)

ACTOR = "oauth"
# a token is renewed this long before the provider says it expires (a quarter of its life when
# that is shorter), so no login is attempted with one about to lapse
EARLY_RENEWAL_S = 300.0
# when the token endpoint does not say how long a token lives (expires_in is only RECOMMENDED)
ASSUMED_LIFETIME_S = 3600.0
TOKEN_TIMEOUT_S = 30.0
# after the provider refused the refresh token or the client for good: ask again at most this often
ASK_AGAIN_REFUSED_S = 3600.0
# after the endpoint could not be reached or answered with a temporary error
ASK_AGAIN_UNREACHABLE_S = 30.0

TokenState = Literal["valid", "revoked", "client-refused"]
# told of each change of a refresh token's state: its settings, the state, what the endpoint said
StateReporter = Callable[[OAuthSettings, TokenState, str], None]


class TokenRefused(Exception):
    """No access token can be had now; the message says why and what a person should do."""

    def __init__(self, message: str, state: TokenState | None = None) -> None:
        super().__init__(message)
        self.state = state


class Credential(Protocol):
    """What a login needs: the secret to offer, and another one after the server refused it."""

    def secret(self) -> str: ...

    def renew(self, refused: str) -> str | None:
        """A different secret to try once after ``refused`` was refused, or None if there is none."""
        ...


@dataclass(frozen=True)
class FixedSecret:
    """A password, or an access token someone else keeps current: nothing to renew."""

    value: str

    def secret(self) -> str:
        return self.value

    def renew(self, refused: str) -> str | None:
        return None


def advice(state: TokenState | None, user: str, settings: OAuthSettings) -> str:
    """What a person must do about a refresh token in ``state`` (nothing while it works)."""
    if state == "revoked":
        return (
            f"OAuth2 refresh token revoked — re-authorise {user} with the provider, put the new refresh "
            f"token in {settings.refresh_token_env} and restart mailbot"
        )
    if state == "client-refused":
        secret = f" and the secret in {settings.client_secret_env}" if settings.client_secret_env else ""
        return (
            f"OAuth2 client refused by the token endpoint — check the client id in {settings.client_id_env}"
            f"{secret} (client secrets expire) and restart mailbot"
        )
    return ""


class RefreshingToken:
    """An access token kept current from one refresh token; safe to share between threads."""

    def __init__(
        self,
        settings: OAuthSettings,
        user: str,
        client_id: str,
        client_secret: str | None,
        refresh_token: str,
        on_state: StateReporter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.user = user
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._on_state = on_state
        self._clock = clock
        # one refresh at a time: the threads that need a token meanwhile wait for its result
        self._lock = threading.Lock()
        self._access: str | None = None
        self._renew_at = 0.0
        self._quiet_until = 0.0
        self._refusal: TokenRefused | None = None
        self._reported: TokenState | None = None
        for secret in (client_secret, refresh_token):
            if secret:
                mask_from_now_on(secret)

    def secret(self) -> str:
        """The current access token, renewed first if it is about to expire."""
        with self._lock:
            if self._access is not None and self._clock() < self._renew_at:
                return self._access
            return self._refresh()

    def renew(self, refused: str) -> str:
        """A new access token after a server refused ``refused`` (another thread's if it renewed meanwhile)."""
        with self._lock:
            if self._access is not None and self._access != refused and self._clock() < self._renew_at:
                return self._access
            return self._refresh()

    def _refresh(self) -> str:
        now = self._clock()
        if self._refusal is not None and now < self._quiet_until:
            # asking again so soon would get the same answer (a fresh exception: a raised one keeps its traceback)
            raise TokenRefused(str(self._refusal), self._refusal.state)
        settings = self.settings
        session = OAuth2Session(
            self._client_id,
            self._client_secret,
            # in the form body: what both Microsoft's and Google's token endpoints document
            token_endpoint_auth_method="client_secret_post" if self._client_secret else "none",
            scope=settings.scopes,
        )
        try:
            token = session.refresh_token(settings.endpoint, refresh_token=self._refresh_token, timeout=TOKEN_TIMEOUT_S)
            access = str(token["access_token"])
        except OAuthError as exc:
            raise self._refused(exc) from None
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise self._unreachable(f"{exc.__class__.__name__}: {exc}") from None
        finally:
            session.close()
        mask_from_now_on(access)
        if token.get("refresh_token"):
            # Microsoft hands out a new refresh token with each access token: the newest lives longest
            self._refresh_token = str(token["refresh_token"])
            mask_from_now_on(self._refresh_token)
        lifetime = _lifetime(token.get("expires_in"))
        self._access = access
        self._renew_at = self._clock() + lifetime - min(EARLY_RENEWAL_S, lifetime / 4)
        self._refusal = None
        log.info("renewed the OAuth2 access token of %s (valid for %.0f s)", self.user, lifetime)
        self._report("valid", "")
        return access

    def _refused(self, exc: OAuthError) -> TokenRefused:
        said = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
        if exc.error == "invalid_grant":
            state: TokenState = "revoked"
        elif exc.error in ("invalid_client", "unauthorized_client"):
            state = "client-refused"
        else:
            return self._unreachable(said)
        refusal = TokenRefused(f"{advice(state, self.user, self.settings)} (the token endpoint said {said})", state)
        self._access = None
        self._refusal = refusal
        self._quiet_until = self._clock() + ASK_AGAIN_REFUSED_S
        log.error("%s", refusal)
        self._report(state, said)
        return refusal

    def _unreachable(self, detail: str) -> TokenRefused:
        refusal = TokenRefused(f"OAuth2 token endpoint {self.settings.endpoint} not available: {detail}")
        self._refusal = refusal
        self._quiet_until = self._clock() + ASK_AGAIN_UNREACHABLE_S
        log.warning("%s; asking again in %.0f s at the earliest", refusal, ASK_AGAIN_UNREACHABLE_S)
        return refusal

    def _report(self, state: TokenState, said: str) -> None:
        # the first success of a run is reported too: it clears what an earlier run recorded
        if state == self._reported or self._on_state is None:
            return
        try:
            self._on_state(self.settings, state, said)
        except Exception as exc:  # the database may be what failed; logins must go on
            log.warning("could not record the OAuth2 token state of %s: %s", self.user, exc)
            return
        self._reported = state


def _lifetime(expires_in: object) -> float:
    try:
        seconds = float(str(expires_in))
    except ValueError:
        return ASSUMED_LIFETIME_S
    return seconds if seconds > 0 else ASSUMED_LIFETIME_S


class Credentials:
    """The credentials of one configuration's accounts: one :class:`RefreshingToken` per ``oauth`` table."""

    def __init__(
        self,
        settings: Settings,
        on_state: StateReporter | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._on_state = on_state
        self._environ = environ
        self._lock = threading.Lock()
        self._tokens: dict[OAuthSettings, RefreshingToken] = {}

    def of(self, account: MailboxSettings | SmtpSettings) -> Credential:
        """The credential of ``account``; ConfigError if an environment variable it names is unset."""
        oauth = account.oauth
        if oauth is None:
            return FixedSecret(resolve_secret(account, self._environ))
        with self._lock:
            token = self._tokens.get(oauth)
            if token is None:
                token = self._tokens[oauth] = RefreshingToken(
                    oauth,
                    account.user or "",
                    secret_from_env(account, oauth.client_id_env, self._environ),
                    secret_from_env(account, oauth.client_secret_env, self._environ)
                    if oauth.client_secret_env
                    else None,
                    secret_from_env(account, oauth.refresh_token_env, self._environ),
                    self._on_state,
                )
            return token


def record_token_states(store: Storage) -> StateReporter:
    """A reporter that writes each change of a refresh token's state to the event log."""

    def record(settings: OAuthSettings, state: TokenState, said: str) -> None:
        with transaction(store.sessions) as session:
            add_event(
                session,
                EventKind.OAUTH_REFRESH,
                ACTOR,
                refresh_token_env=settings.refresh_token_env,
                token_url=settings.endpoint,
                state=state,
                said=said[:500],
            )

    return record


# --- what status and the digest show ------------------------------------------------------------


@dataclass(frozen=True)
class TokenStatus:
    """The last recorded state of an account's refresh token, and what a person should do about it."""

    account: str  # "mailbox smp" or "SMTP"
    user: str
    state: TokenState | None  # None: no run has renewed a token yet
    since: datetime | None
    said: str  # what the token endpoint answered
    advice: str  # what to do, in one sentence; empty while the token works

    @property
    def needs_a_person(self) -> bool:
        return self.state in ("revoked", "client-refused")


def oauth_accounts(settings: Settings, call_id: str | None = None) -> list[tuple[str, str, OAuthSettings]]:
    """(name, user, oauth) of each account that renews its token (of those serving ``call_id``)."""
    found = [
        (f"mailbox {box.name}", box.user, box.oauth)
        for box in settings.mailbox
        if box.oauth is not None and (call_id is None or call_id in box.calls)
    ]
    if settings.smtp.oauth is not None:
        found.append(("SMTP", settings.smtp.user or "", settings.smtp.oauth))
    return found


def token_statuses(session: Session, settings: Settings, call_id: str | None = None) -> list[TokenStatus]:
    """The state of each OAuth2 account's refresh token (of those serving ``call_id``), from the event log."""
    accounts = oauth_accounts(settings, call_id)
    if not accounts:
        return []
    latest = latest_token_states(session)
    statuses = []
    for name, user, oauth in accounts:
        at, detail = latest.get((oauth.refresh_token_env, oauth.endpoint), (None, {}))
        state = _state(detail.get("state"))
        said = str(detail.get("said") or "")
        statuses.append(TokenStatus(name, user, state, at, said, advice(state, user, oauth)))
    return statuses


def token_problems(session: Session, settings: Settings, call_id: str | None = None) -> tuple[TokenStatus, ...]:
    """The OAuth2 accounts (of those serving ``call_id``) whose authorisation a person must renew."""
    return tuple(status for status in token_statuses(session, settings, call_id) if status.needs_a_person)


def _state(value: object) -> TokenState | None:
    if value in ("valid", "revoked", "client-refused"):
        return value
    return None
