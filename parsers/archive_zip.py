"""Members of a .zip, read with the standard library within the limits of parsers.archive_containment.

Names without the UTF-8 flag are decoded as UTF-8 when they are valid UTF-8, else as GB18030 (what
Chinese Windows writes), else as the CP437 the format specifies; a name flagged UTF-8 that is not
UTF-8 (some Chinese archivers set the flag over GBK bytes) is read the same way.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from parsers.archive_containment import (
    Budget,
    Listed,
    Member,
    check_directory,
    member_cap,
    member_name,
    overran,
    skipped,
)
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable

_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1


def decode_member_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & _UTF8_FLAG:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename


def clear_false_utf8_flags(data: bytes) -> bytes:
    """The archive with the UTF-8 flag cleared on every name that is not UTF-8.

    APPNOTE 4.4.4 (general purpose bit flag, bit 11 "Language encoding flag") promises UTF-8 names;
    some Chinese archivers set it over GBK bytes, and the standard library then refuses the whole
    archive. The flag is cleared in the central directory header (APPNOTE 4.3.12) and in the local
    file header it points to (APPNOTE 4.3.7), which zipfile compares with it; the name is then
    decoded like any unflagged one. Zip64 archives are left alone.
    """
    end = data.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(data):
        return data
    entries, _, directory_offset = struct.unpack("<HII", data[end + 10 : end + 20])
    if directory_offset == 0xFFFFFFFF:
        return data
    # the directory's offset is counted from the archive's start, which may follow prepended bytes
    shift = max(0, end - struct.unpack("<I", data[end + 12 : end + 16])[0] - directory_offset)
    fixed = bytearray(data)
    offset = directory_offset + shift
    for _ in range(entries):
        if fixed[offset : offset + 4] != b"PK\x01\x02" or offset + 46 > len(fixed):
            break
        (flags,) = struct.unpack("<H", fixed[offset + 8 : offset + 10])
        name_length, extra_length, comment_length = struct.unpack("<HHH", fixed[offset + 28 : offset + 34])
        (local_offset,) = struct.unpack("<I", fixed[offset + 42 : offset + 46])
        name = bytes(fixed[offset + 46 : offset + 46 + name_length])
        if flags & _UTF8_FLAG and not _is_utf8(name):
            fixed[offset + 8 : offset + 10] = struct.pack("<H", flags & ~_UTF8_FLAG)
            local = local_offset + shift
            if fixed[local : local + 4] == b"PK\x03\x04":
                (local_flags,) = struct.unpack("<H", fixed[local + 6 : local + 8])
                fixed[local + 6 : local + 8] = struct.pack("<H", local_flags & ~_UTF8_FLAG)
        offset += 46 + name_length + extra_length + comment_length
    return bytes(fixed)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _open_zip(data: bytes, filename: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError:  # a name flagged UTF-8 that is not: see clear_false_utf8_flags
        pass
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken zip archive: {exc}")) from None
    try:
        return zipfile.ZipFile(io.BytesIO(clear_false_utf8_flags(data)))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken zip archive: {exc}")) from None


def read_zip(data: bytes, filename: str, limits: Limits) -> list[Member]:
    """The zip's files; raises CannotRead for a broken archive or one that looks like a bomb."""
    archive = _open_zip(data, filename)
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not skipped(decode_member_name(info))]
        listed = [Listed(decode_member_name(info), info.file_size, info.compress_size) for info in infos]
        check_directory(listed, len(data), filename, limits)
        members: list[Member] = []
        budget = Budget(filename, limits)
        for number, info in enumerate(infos, start=1):
            stored = decode_member_name(info)
            name = member_name(stored, number)
            if info.flag_bits & _ENCRYPTED_FLAG:
                members.append(
                    Member(name, stored, None, Unreadable("encrypted", name, "the archive member needs a password"))
                )
                continue
            content = _read_zip_member(archive, info, limits)
            if content is None:
                members.append(overran(name, stored))
                continue
            if isinstance(content, Unreadable):
                members.append(Member(name, stored, None, Unreadable(content.reason, name, content.detail)))
                continue
            budget.spend(len(content))
            members.append(Member(name, stored, content))
        return members


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> bytes | Unreadable | None:
    """The member's bytes; None when it expands past what it declared; Unreadable when broken."""
    cap = member_cap(info.file_size, limits)
    try:
        with archive.open(info) as stream:
            content = stream.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, NotImplementedError):
            return Unreadable("unsupported-format", info.filename, f"cannot extract: {exc}")
        return Unreadable("corrupt", info.filename, f"cannot extract: {exc}")
    if len(content) > cap:
        return None
    return content
