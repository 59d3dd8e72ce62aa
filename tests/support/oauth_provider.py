"""An OAuth2 identity provider on loopback: a token endpoint and a token introspection endpoint.

The token endpoint answers the refresh grant (RFC 6749 section 6) as Microsoft's and Google's do:
short-lived access tokens, ``invalid_client`` for a wrong client, ``invalid_grant`` for a refresh
token that was revoked, and (like Microsoft) a new refresh token with each access token, the old
one staying valid. It counts every request per grant, so a test can tell how often it was asked.
The introspection endpoint (RFC 7662) tells Dovecot's ``oauth2`` passdb and the test SMTP server
whether an access token is active and whose it is; it answers from the same clock, so an access
token stops working when it expires.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

CLIENT_ID = "mailbot-test-client"
CLIENT_SECRET = "test-client-secret-5e1f"


@dataclass
class Grant:
    """One user's consent: the refresh tokens and access tokens issued under it."""

    user: str
    refresh_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass(frozen=True)
class AccessToken:
    grant: int
    expires_at: float


class OAuthProvider:
    def __init__(self, lifetime_s: int = 3600) -> None:
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._grants: dict[int, Grant] = {}
        self._by_refresh_token: dict[str, int] = {}
        self._access: dict[str, AccessToken] = {}
        self._numbers = itertools.count(1)
        self._barred: set[str] = set()
        self.token_requests: Counter[int] = Counter()  # per grant, answered or refused
        self.introspections: list[tuple[str, bool]] = []  # (user or "?", active)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-provider", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.base_url}/introspect"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what the test does as the provider's administrator ------------------------------------

    def grant(self, user: str) -> tuple[int, str]:
        """A user consents: the grant's number and its first refresh token."""
        with self._lock:
            number = next(self._numbers)
            token = f"rt-{number}-{secrets.token_hex(8)}"
            self._grants[number] = Grant(user, {token})
            self._by_refresh_token[token] = number
            return number, token

    def revoke(self, grant: int) -> None:
        """Revoke the grant: its refresh tokens get invalid_grant, its access tokens stop working."""
        with self._lock:
            self._grants[grant].revoked = True
            self._expire_access_tokens(grant)

    def end_access_tokens(self, grant: int) -> None:
        """End the grant's access tokens before they expire (as after a password change); refreshing still works."""
        with self._lock:
            self._expire_access_tokens(grant)

    def _expire_access_tokens(self, grant: int) -> None:
        for token, issued in list(self._access.items()):
            if issued.grant == grant:
                self._access[token] = AccessToken(grant, 0.0)

    def bar(self, user: str, barred: bool = True) -> None:
        """Call every access token of ``user`` inactive, even fresh ones (as for a disabled account)."""
        with self._lock:
            (self._barred.add if barred else self._barred.discard)(user)

    def active_user(self, token: str) -> str | None:
        """The user an access token belongs to while it is active, else None."""
        with self._lock:
            issued = self._access.get(token)
            if issued is None or time.monotonic() >= issued.expires_at:
                return None
            grant = self._grants[issued.grant]
            return None if grant.revoked or grant.user in self._barred else grant.user

    # --- the endpoints ----------------------------------------------------------------------

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        with self._lock:
            number = self._by_refresh_token.get(form.get("refresh_token", ""))
            if number is not None:
                self.token_requests[number] += 1
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return 401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}
            if number is None or self._grants[number].revoked:
                return 400, {"error": "invalid_grant", "error_description": "the refresh token was revoked"}
            access = f"at-{number}-{secrets.token_hex(12)}"
            self._access[access] = AccessToken(number, time.monotonic() + self.lifetime_s)
            rotated = f"rt-{number}-{secrets.token_hex(8)}"
            self._grants[number].refresh_tokens.add(rotated)
            self._by_refresh_token[rotated] = number
            return 200, {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.lifetime_s,
                "refresh_token": rotated,
                "scope": form.get("scope", "https://mail.google.com/"),
            }

    def _introspect(self, form: dict[str, str]) -> dict[str, object]:
        user = self.active_user(form.get("token", ""))
        with self._lock:
            self.introspections.append((user or "?", user is not None))
        return {"active": True, "username": user} if user else {"active": False}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fields = parse_qs(self.rfile.read(length).decode())
                form = {name: values[0] for name, values in fields.items()}
                if self.path == "/token":
                    status, body = provider._token(form)
                elif self.path == "/introspect":
                    status, body = 200, provider._introspect(form)
                else:
                    status, body = 404, {"error": "not_found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads the counters, not the access log

        return Handler
