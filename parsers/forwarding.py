"""Who wrote a forwarded mail first, as the forward itself shows it.

A secretary (or a colleague, or the applicant's other account) forwards the applicant's mail: as an
attached message (message/rfc822, an Outlook item) whose own From header says who wrote it, or inline,
the earlier mail's header block quoted in the body and its file attached again. The form still names
the applicant; what is kept here is only who forwarded it and who wrote the original, for the record.
"""

from __future__ import annotations

import re

from parsers.model import Envelope

_FORWARD_SUBJECT = re.compile(r"^\s*((fw|fwd)\s*[:：]|(转发|轉發|转寄)\s*[:：]?)", re.IGNORECASE)
# Markers that only forwards carry (Gmail, Apple Mail in English and Chinese, NetEase, Outlook "FW" bodies)
_FORWARD_MARKER = re.compile(
    r"^[\s>]*(?:-{2,}\s*(?:forwarded message|转发邮件信息|转发的邮件|轉寄的郵件)\s*-{0,}"
    r"|begin forwarded message\s*:|开始转发的邮件\s*[:：]|下面是被转发的邮件\s*[:：])",
    re.IGNORECASE | re.MULTILINE,
)
_FROM_LINE = re.compile(r"^[\s>*]*(?:from|发件人|寄件者|寄件人)\s*[:：]\s*(?P<rest>.*)$", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")


def inline_forward_sender(envelope: Envelope) -> str | None:
    """The address in the quoted From line of an inline forward, or None when the body is no forward."""
    body = envelope.body_text
    marker = _FORWARD_MARKER.search(body)
    if marker is None and not _FORWARD_SUBJECT.match(envelope.subject):
        return None
    start = marker.end() if marker is not None else 0
    for line in _FROM_LINE.finditer(body, start):
        found = _ADDRESS.search(line.group("rest"))
        if found:
            return found.group(0).lower()
    return None


def forwarding(envelope: Envelope, original_sender: str) -> tuple[str | None, str | None]:
    """(forwarded by, written by) for a form that came in an enclosed mail of ``original_sender``
    ("" when the form was attached to this message itself); (None, None) when it was not forwarded,
    or the sender forwarded their own mail."""
    original = original_sender or inline_forward_sender(envelope) or ""
    if not original or original == envelope.from_addr:
        return None, None
    return envelope.from_addr or None, original
