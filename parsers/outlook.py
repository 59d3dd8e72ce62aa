"""Outlook's wrappers: winmail.dat (TNEF) and attached Outlook items (.msg), opened like archives.

Outlook sending "Rich Text" mail to the Internet packs the attachments into one
``application/ms-tnef`` part, winmail.dat ([MS-OXTNEF]); tnefparse reads it. An Outlook item dragged
into a mail travels as a .msg file, a Compound File of MAPI properties ([MS-OXMSG]); extract-msg
reads it, and an item embedded in it (a mail forwarded as an attachment) is opened in turn. Each file
inside becomes a :class:`parsers.archive_containment.Member` with the same limits as an archive's, and the
item's sender is kept: a form that arrives in someone else's mail was forwarded.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Any

from parsers.archive_containment import Listed, Member, check_directory, member_name
from parsers.charsets import decode_bytes
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.textnorm import safe_text

log = logging.getLogger(__name__)

# [MS-OXPROPS] PidTagAttachLongFilename, which tnefparse keeps among the attachment's MAPI properties
_ATTACH_LONG_FILENAME = 0x3707
_PROPERTY_LIST_ATTRIBUTES = (0x9003, 0x9005)  # attMsgProps, attAttachment
# [MS-OXCDATA] 2.11.1 property types: the variable-size ones (string8, unicode, object, binary) …
_VARIABLE_TYPES = frozenset({0x001E, 0x001F, 0x000D, 0x0102})
# … and the sizes of fixed ones in a TNEF property list (short and boolean are padded to 4)
_FIXED_SIZES = {
    0x0002: 4,
    0x000B: 4,
    0x0003: 4,
    0x0004: 4,
    0x000A: 4,
    0x0005: 8,
    0x0006: 8,
    0x0007: 8,
    0x0014: 8,
    0x0040: 8,
    0x0048: 16,
    0x0001: 0,
}


@dataclass(frozen=True)
class OutlookItem:
    members: list[Member]
    sender: str  # the address the enclosed message came from, "" when it does not say


def read_tnef(data: bytes, filename: str, limits: Limits) -> OutlookItem:
    """The files in a winmail.dat; raises CannotRead when it is not one or is past the limits."""
    import tnefparse

    _check_property_counts(data, filename)
    try:
        tnef = tnefparse.TNEF(data, do_checksum=False)  # Outlook writes wrong ones on good files
        files = list(_tnef_files(tnef, limits.archive_max_depth))
    except Exception as exc:  # tnefparse raises bare ValueError/IndexError/struct.error on damage
        raise CannotRead(Unreadable("corrupt", filename, f"broken TNEF: {type(exc).__name__}: {exc}"[:300])) from None
    return OutlookItem(_members(files, filename, len(data), limits), "")


def _check_property_counts(data: bytes, filename: str) -> None:
    """Refuse a stream whose MAPI property lists claim more than they hold.

    tnefparse walks every count a property list states, even past the end of its data (logging a
    warning, or adding an empty value, each time): a damaged count of billions keeps a reader busy
    until its time runs out. So each list is walked here first, bounded by its own length.
    [MS-OXTNEF] 2.1.3.3: an attribute is AttrLevel (1 byte), AttrID (4), AttrLength (4), its data
    and a checksum (2); attMsgProps (0x9003) and attAttachment (0x9005) hold a MsgPropertyList.
    """
    offset = 6  # TNEFSignature and LegacyKey
    while offset + 9 <= len(data):
        attribute, length = struct.unpack("<II", data[offset + 1 : offset + 9])
        payload = data[offset + 9 : offset + 9 + length]
        if attribute & 0xFFFF in _PROPERTY_LIST_ATTRIBUTES and not _property_list_fits(payload):
            raise CannotRead(Unreadable("corrupt", filename, "broken TNEF: a MAPI property list overruns its data"))
        offset += 11 + length


def _property_list_fits(payload: bytes) -> bool:
    """[MS-OXTNEF] 2.1.3.4 MsgPropertyList: a count, then each MsgPropertyValue: PropertyTag (type,
    id); for a named property (id ≥ 0x8000) a GUID, a kind and a numeric id or a padded name; for a
    multi-valued type a value count; then the values: fixed-size ones as they are, variable-size ones
    (strings, binary, objects) as a length and the bytes padded to 4."""
    view = _Bounded(payload)
    for _ in range(view.count(4)):  # every property takes at least its 4-byte tag
        property_type, property_id = view.uint16(), view.uint16()
        if property_id >= 0x8000:
            view.skip(16)
            view.skip(4 if view.uint32() == 0 else _padded(view.uint32()))
        multi = bool(property_type & 0x1000)
        base_type = property_type & ~0x1000
        if base_type in _VARIABLE_TYPES:
            # a single value has its own count too (always 1); a multi-valued one has only the list's
            for _ in range(view.count(4)):
                view.skip(_padded(view.uint32()))
                if view.failed:
                    return False
        else:
            size = _FIXED_SIZES.get(base_type, 4)
            view.skip((view.count(max(size, 1)) if multi else 1) * size)
        if view.failed:
            return False
    return not view.failed


class _Bounded:
    """Reads little-endian integers from a buffer; past its end it marks itself failed instead."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset, self.failed = data, 0, False

    def skip(self, size: int) -> None:
        self.offset += size
        if self.offset > len(self.data):
            self.failed = True

    def uint16(self) -> int:
        return self._unpack("<H", 2)

    def uint32(self) -> int:
        return self._unpack("<I", 4)

    def count(self, smallest: int) -> int:
        """A count of items of at least ``smallest`` bytes each; more than the rest can hold fails."""
        value = self.uint32()
        if value * smallest > len(self.data) - self.offset:
            self.failed = True
            return 0
        return value

    def _unpack(self, layout: str, size: int) -> int:
        if self.failed or self.offset + size > len(self.data):
            self.failed = True
            return 0
        value: int = struct.unpack(layout, self.data[self.offset : self.offset + size])[0]
        self.offset += size
        return value


def _padded(size: int) -> int:
    return size + (-size % 4)


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
