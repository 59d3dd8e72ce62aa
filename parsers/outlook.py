"""Outlook's wrappers: winmail.dat (TNEF) and attached Outlook items (.msg), opened like archives.

Outlook sending "Rich Text" mail to the Internet packs the attachments into one
``application/ms-tnef`` part, winmail.dat ([MS-OXTNEF]); tnefparse reads it. An Outlook item dragged
into a mail travels as a .msg file, a Compound File of MAPI properties ([MS-OXMSG]); extract-msg
reads it, and an item embedded in it (a mail forwarded as an attachment) is opened in turn. Each file
inside becomes a :class:`parsers.archive.Member` with the same limits as an archive's, and the
item's sender is kept: a form that arrives in someone else's mail was forwarded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from parsers.archive import Listed, Member, check_directory, member_name
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.mime import decode_bytes
from parsers.model import Unreadable
from parsers.textnorm import safe_text

log = logging.getLogger(__name__)

# [MS-OXPROPS] PidTagAttachLongFilename, which tnefparse keeps among the attachment's MAPI properties
_ATTACH_LONG_FILENAME = 0x3707


@dataclass(frozen=True)
class OutlookItem:
    members: list[Member]
    sender: str  # the address the enclosed message came from, "" when it does not say


def read_tnef(data: bytes, filename: str, limits: Limits) -> OutlookItem:
    """The files in a winmail.dat; raises CannotRead when it is not one or is past the limits."""
    import tnefparse

    try:
        tnef = tnefparse.TNEF(data, do_checksum=True)
        files = list(_tnef_files(tnef, limits.archive_max_depth))
    except Exception as exc:  # tnefparse raises bare ValueError/IndexError/struct.error on damage
        raise CannotRead(Unreadable("corrupt", filename, f"broken TNEF: {type(exc).__name__}: {exc}"[:300])) from None
    # Outlook's checksums are sometimes wrong on good files: only an empty reading makes them count
    if not files and not all(item.good_checksum for item in tnef.objects):
        raise CannotRead(Unreadable("corrupt", filename, "broken TNEF: attribute checksums do not match"))
    return OutlookItem(_members(files, filename, len(data), limits), "")


def _tnef_files(tnef: Any, depth: int) -> list[tuple[str, bytes]]:
    files: list[tuple[str, bytes]] = []
    codepage = getattr(tnef, "codepage", None) or "gb18030"
    for attachment in tnef.attachments:
        embedded = getattr(attachment, "embed", None)
        if embedded is not None and depth > 0:  # an attached mail item: its own attachments
            files.extend(_tnef_files(embedded, depth - 1))
            continue
        files.append((_tnef_name(attachment, codepage), bytes(attachment.data or b"")))
    return files


def _tnef_name(attachment: Any, codepage: str) -> str:
    """attAttachTitle is 8-bit text in the message's code page (936 on Chinese Windows); prefer the long name."""
    for prop in getattr(attachment, "mapi_attrs", []):
        if prop.name == _ATTACH_LONG_FILENAME:
            return _text(prop.data, codepage)
    return _text(getattr(attachment, "_name", b""), codepage)


def _text(value: object, codepage: str) -> str:
    if isinstance(value, bytes):
        return safe_text(decode_bytes(value, codepage)).strip("\x00 ")
    return safe_text(str(value or "")).strip("\x00 ")


def read_msg(data: bytes, filename: str, limits: Limits) -> OutlookItem:
    """The files in an Outlook item and who sent it; raises CannotRead when it is not one."""
    import extract_msg

    try:
        item = extract_msg.openMsg(data)
    except Exception as exc:  # extract-msg raises its own and olefile's errors on damage
        raise CannotRead(
            Unreadable("corrupt", filename, f"broken Outlook item: {type(exc).__name__}: {exc}"[:300])
        ) from None
    try:
        sender = _sender_address(item)
        files = _msg_files(item, limits.archive_max_depth)
    except CannotRead:
        raise
    except Exception as exc:
        raise CannotRead(
            Unreadable("corrupt", filename, f"broken Outlook item: {type(exc).__name__}: {exc}"[:300])
        ) from None
    finally:
        item.close()
    return OutlookItem(_members(files, filename, len(data), limits), sender)


def _msg_files(item: Any, depth: int) -> list[tuple[str, bytes]]:
    from extract_msg.enums import AttachmentType

    files: list[tuple[str, bytes]] = []
    for attachment in getattr(item, "attachments", []):
        if attachment.type == AttachmentType.MSG:
            if depth > 0:  # a mail forwarded as an attachment of the item
                files.extend(_msg_files(attachment.data, depth - 1))
            continue
        data = attachment.data
        if not isinstance(data, bytes):  # links to the web, broken or signed parts: nothing to read
            continue
        name = attachment.longFilename or attachment.shortFilename or attachment.displayName or ""
        files.append((safe_text(str(name)).strip("\x00 "), data))
    return files


def _sender_address(item: Any) -> str:
    """The sender's address: from the item's headers, else PidTagSenderSmtpAddress (0x5D01) or
    PidTagSenderEmailAddress (0x0C1F) ([MS-OXPROPS]), which items made without headers carry."""
    import email.utils

    candidates = [str(getattr(item, "sender", "") or "")]
    for stream in ("__substg1.0_5D01", "__substg1.0_0C1F"):
        candidates.append(str(item.getStringStream(stream) or ""))
    for candidate in candidates:
        address = email.utils.parseaddr(candidate)[1].lower()
        if "@" in address:
            return address
    return ""


def _members(files: list[tuple[str, bytes]], filename: str, size: int, limits: Limits) -> list[Member]:
    """Files as archive members, held to the archive limits (count, total size, each file's size)."""
    check_directory([Listed(name, len(data), None) for name, data in files], size, filename, limits)
    members: list[Member] = []
    for number, (stored, data) in enumerate(files, start=1):
        name = member_name(stored, number)
        if len(data) > limits.max_attachment_bytes:
            refused = Unreadable("too-large", name, f"{len(data)} bytes (limit {limits.max_attachment_bytes})")
            members.append(Member(name, stored, None, refused))
            continue
        members.append(Member(name, stored, data))
    return members
