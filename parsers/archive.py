"""Members of a .zip, read in memory within the limits: no member name ever reaches the file system.

Names without the UTF-8 flag are decoded as UTF-8 when they are valid UTF-8, else as GB18030 (what
Chinese Windows writes), else as the CP437 the format specifies.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.textnorm import safe_filename

_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_SKIPPED_PREFIXES = ("__MACOSX/",)
_SKIPPED_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")
_RATIO_FLOOR = 1024 * 1024  # small members may compress extremely well without being bombs


@dataclass(frozen=True)
class Member:
    name: str  # decoded and made safe
    stored_name: str  # as decoded from the archive, for the attachment path
    data: bytes | None
    refused: Unreadable | None = None


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


def read_zip(data: bytes, filename: str, limits: Limits) -> list[Member]:
    """The archive's files; raises CannotRead for a broken archive or one that looks like a bomb."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken zip archive: {exc}")) from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not _skipped(decode_member_name(info))]
        _check_bomb(infos, filename, limits)
        members: list[Member] = []
        read_total = 0
        for number, info in enumerate(infos, start=1):
            stored = decode_member_name(info)
            name = safe_filename(stored.replace("\\", "/").rsplit("/", 1)[-1], f"member-{number}")
            if info.flag_bits & _ENCRYPTED_FLAG:
                members.append(
                    Member(name, stored, None, Unreadable("encrypted", name, "the archive member needs a password"))
                )
                continue
            content = _read_member(archive, info, limits)
            if content is None:
                refused = Unreadable(
                    "archive-refused", name, "the member expands beyond its declared size or the limits"
                )
                members.append(Member(name, stored, None, refused))
                continue
            if isinstance(content, Unreadable):
                members.append(Member(name, stored, None, Unreadable(content.reason, name, content.detail)))
                continue
            read_total += len(content)
            if read_total > limits.archive_max_total_bytes:
                raise CannotRead(Unreadable("archive-refused", filename, "the members expand beyond the total limit"))
            members.append(Member(name, stored, content))
        return members


def _skipped(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name.startswith(_SKIPPED_PREFIXES) or base in _SKIPPED_NAMES or base.startswith("._")


def _check_bomb(infos: list[zipfile.ZipInfo], filename: str, limits: Limits) -> None:
    if len(infos) > limits.archive_max_members:
        raise CannotRead(
            Unreadable("archive-refused", filename, f"{len(infos)} members (limit {limits.archive_max_members})")
        )
    total = sum(info.file_size for info in infos)
    if total > limits.archive_max_total_bytes:
        raise CannotRead(Unreadable("archive-refused", filename, f"{total} bytes once expanded"))
    for info in infos:
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.archive_max_ratio * max(info.compress_size, 1):
            detail = f"{info.filename!r} expands {info.compress_size} bytes to {info.file_size}"
            raise CannotRead(Unreadable("archive-refused", filename, detail))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> bytes | Unreadable | None:
    """The member's bytes; None when it expands past what it declared; Unreadable when broken."""
    cap = min(limits.max_attachment_bytes, max(info.file_size, 0))
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
