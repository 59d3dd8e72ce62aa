"""SMTP servers on loopback that need a login (a password, or an OAuth2 access token), and remember every login."""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

from mailbot.embedded import free_port


class Authenticator:
    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.logins: list[bool] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        granted = isinstance(auth_data, LoginPassword) and auth_data.password == self.secret
        self.logins.append(granted)
        return AuthResult(success=granted, handled=False)


@dataclass
class AuthSink:
    """An SMTP server on loopback that needs a login (without TLS, as the test cannot have a certificate)."""

    secret: str
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.secret)
        self.host, self.port = "127.0.0.1", free_port()
        self.controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            authenticator=self.authenticator,
            auth_required=True,
            auth_require_tls=False,
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.original_content or envelope.content))
        return "250 accepted"


class XOAuth2Sink:
    """An SMTP server on loopback that takes only AUTH XOAUTH2, checking each access token as a provider would.

    ``active_user`` says whose a token is while it is active (the identity provider's introspection).
    A refused token gets what Gmail sends: a challenge carrying the reason, then 535 after the
    client's empty answer. ``logins`` keeps (user, granted) of every attempt.
    """

    def __init__(self, active_user: Callable[[str], str | None]) -> None:
        self.active_user = active_user
        self.received: list[bytes] = []
        self.logins: list[tuple[str, bool]] = []
        self.host, self.port = "127.0.0.1", free_port()
        self.controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            auth_required=True,
            auth_require_tls=False,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
        )

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        # the initial response comes with the command, base64-encoded; an answer to a challenge decoded
        answer = b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        text = answer.decode()
        parts = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
        user, token = parts.get("user", ""), parts.get("auth", "").removeprefix("Bearer ")
        granted = bool(user) and self.active_user(token) == user
        self.logins.append((user, granted))
        if granted:
            return AuthResult(success=True, handled=False, auth_data=user)
        reason = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(reason)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.original_content or envelope.content))
        return "250 accepted"
