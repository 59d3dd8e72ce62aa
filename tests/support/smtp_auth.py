"""An SMTP server on loopback that needs a login, and remembers every login it was offered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

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
