"""Back-filling: take .eml files, maildirs and mbox files in as if they had arrived by IMAP.

The arrival time is the newest ``Received:`` stamp (what the receiving server saw), or the time
given with ``--arrival``; never the sender's ``Date:`` header.
"""

from __future__ import annotations

import logging
import mailbox
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mailbot.config import Settings
from parsers.headers import header_facts, parse_headers_only, received_times
from storage import Storage
from storage.intake_records import Recorded

log = logging.getLogger(__name__)


class ImportError_(Exception):
    """A path cannot be imported; the message says why."""


def newest_received(raw: bytes) -> datetime | None:
    """The time stamp after the last ';' of the topmost Received: header that has one."""
    stamps = received_times(parse_headers_only(raw))
    return stamps[0] if stamps else None


def messages_at(path: Path) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) of every message at ``path``: a file, a maildir or an mbox."""
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            box = mailbox.Maildir(path, factory=None, create=False)
            for key in box.iterkeys():
                yield f"{path}:{key}", box.get_bytes(key)
            return
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in {".eml", ".msg", ".txt", ""}:
                yield str(child), child.read_bytes()
        return
    if not path.exists():
        raise ImportError_(f"{path}: no such file or directory")
    head = path.read_bytes()[:5]
    if head.startswith(b"From "):
        box_file = mailbox.mbox(path, factory=None, create=False)
        for key in box_file.iterkeys():
            yield f"{path}:{key}", box_file.get_bytes(key)
        return
    yield str(path), path.read_bytes()


def call_of_recipients(settings: Settings, raw: bytes) -> str:
    """The call whose address the message was sent to (To or Cc), else the first configured."""
    recipients = set(header_facts(raw).recipients)
    return next(
        (c.id for c in settings.call if recipients & {a.lower() for a in c.addresses}),
        settings.call[0].id,
    )


def import_one(
    settings: Settings,
    store: Storage,
    raw: bytes,
    mailbox_name: str | None = None,
    call_id: str | None = None,
    arrival: datetime | None = None,
) -> Recorded:
    """Record one message; the call and mailbox follow from its recipients unless given."""
    when = arrival or newest_received(raw)
    if when is None:
        raise ImportError_("no Received: header with a time stamp: give the arrival time with --arrival")
    if call_id is None:
        call_id = call_of_recipients(settings, raw)
    if mailbox_name is None:
        mailbox_name = next((m.name for m in settings.mailbox if call_id in m.calls), "import")
    return store.intake.record(raw, arrival=when, mailbox=mailbox_name, call_id=call_id, source="import", delivery=None)
