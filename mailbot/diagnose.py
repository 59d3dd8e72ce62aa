"""A failed connection explained in one sentence that names the fix.

The usual set-up mistakes give errors that point elsewhere: an IMAP client talking to an SMTP port
reads "unexpected response: 220 …" (which looks like a refused login), and TLS against a plaintext
port gives "WRONG_VERSION_NUMBER".
"""

from __future__ import annotations

import ssl


def connection_hint(exc: BaseException, host: str, port: int, protocol: str = "IMAP") -> str | None:
    """What the error most likely means for ``host:port``, or None when it says enough itself."""
    text = str(exc)
    if protocol == "IMAP" and "unexpected response" in text and "220" in text:
        return (
            f"{host}:{port} answered with an SMTP greeting (220): that is a mail-sending port; "
            'IMAP is usually on 993 (tls = "ssl") or 143 (tls = "starttls")'
        )
    if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in text:
        usual = "993 for IMAP" if protocol == "IMAP" else "465 for SMTP"
        return (
            f'{host}:{port} does not speak TLS from the first byte: set tls = "starttls" '
            f'(or "none" on loopback), or use the TLS port ({usual})'
        )
    return None
