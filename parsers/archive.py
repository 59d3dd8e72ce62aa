"""Members of a .zip, .7z or .rar, read in memory within the limits: no member name ever reaches the file system.

Every format goes through the same containment before a byte is expanded: the member count, the
total size the directory declares, the ratio of expanded to compressed size (per member where the
format says, for the whole archive where it does not, as in solid 7z and RAR) and, while reading,
each member is cut off at the size it declared. Directories, links and devices are skipped; a
member's name is only ever made into a safe display name. Nesting depth is counted by the caller
(parsers.documents), which examines every member like an attachment of its own.

- zip: the standard library. Names without the UTF-8 flag are decoded as UTF-8 when they are valid
  UTF-8, else as GB18030 (what Chinese Windows writes), else as the CP437 the format specifies; a
  name flagged UTF-8 that is not UTF-8 (some Chinese archivers set the flag over GBK bytes) is read
  the same way.
- 7z: py7zr, in memory; a coder py7zr lacks (BCJ2) falls back to libarchive.
- rar: libarchive (Debian's libarchive13, through libarchive-c). libarchive 3.6 reads RAR 1.5–4.x
  (RAR 2.9/3.x/4.x archives, solid or not, without encryption) and RAR 5.0; encrypted RAR and
  multi-volume sets are not read.
"""

from __future__ import annotations

import ctypes
import io
import locale
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from parsers.charsets import decode_bytes
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.textnorm import safe_filename

ArchiveKind = Literal["zip", "7z", "rar"]
ARCHIVE_KINDS: frozenset[str] = frozenset({"zip", "7z", "rar"})
LIBARCHIVE_HINT = (
    "install libarchive (Debian: apt-get install libarchive13; Python: pip install libarchive-c) to read it, "
    "or ask for a .zip"
)

_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_SKIPPED_PREFIXES = ("__MACOSX/",)
_SKIPPED_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")
_RATIO_FLOOR = 1024 * 1024  # small members may compress extremely well without being bombs
_BLOCK = 64 * 1024
_RAR5_MARKER = b"Rar!\x1a\x07\x01\x00"


@dataclass(frozen=True)
class Member:
    name: str  # decoded and made safe
    stored_name: str  # as decoded from the archive, for the attachment path
    data: bytes | None
    refused: Unreadable | None = None


@dataclass(frozen=True)
class Listed:
    """One regular file as the archive's directory describes it, before anything is expanded."""

    stored_name: str
    size: int | None  # None: the format does not say (RAR 5 may leave it open)
    compressed: int | None  # None: the format does not say per member (solid blocks)


def read_archive(data: bytes, filename: str, kind: ArchiveKind, limits: Limits) -> list[Member]:
    """The archive's files; raises CannotRead for a broken, unsupported or bomb-like archive."""
    if kind == "zip":
        return read_zip(data, filename, limits)
    if kind == "7z":
        return read_7z(data, filename, limits)
    return read_rar(data, filename, limits)


# ---------------------------------------------------------------------------------------------- shared


def member_name(stored: str, number: int) -> str:
    return safe_filename(stored.replace("\\", "/").rsplit("/", 1)[-1], f"member-{number}")


def _skipped(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name.startswith(_SKIPPED_PREFIXES) or base in _SKIPPED_NAMES or base.startswith("._")


def check_directory(listed: list[Listed], archive_size: int, filename: str, limits: Limits) -> None:
    """Refuse an archive whose directory alone shows it is too big or a bomb."""
    if len(listed) > limits.archive_max_members:
        raise CannotRead(
            Unreadable("archive-refused", filename, f"{len(listed)} members (limit {limits.archive_max_members})")
        )
    total = sum(item.size or 0 for item in listed)
    if total > limits.archive_max_total_bytes:
        raise CannotRead(Unreadable("archive-refused", filename, f"{total} bytes once expanded"))
    for item in listed:
        size = item.size or 0
        if (
            item.compressed is not None
            and size > _RATIO_FLOOR
            and size > limits.archive_max_ratio * max(item.compressed, 1)
        ):
            detail = f"{item.stored_name!r} expands {item.compressed} bytes to {size}"
            raise CannotRead(Unreadable("archive-refused", filename, detail))
    # solid archives compress members together: the whole archive's ratio is what is left to judge
    if total > _RATIO_FLOOR and total > limits.archive_max_ratio * max(archive_size, 1):
        raise CannotRead(
            Unreadable("archive-refused", filename, f"{archive_size} bytes expand to {total} (limit ratio)")
        )


class _Budget:
    """What the members may still expand to, all together; a member past it refuses the archive."""

    def __init__(self, filename: str, limits: Limits) -> None:
        self.filename = filename
        self.left = limits.archive_max_total_bytes

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise CannotRead(Unreadable("archive-refused", self.filename, "the members expand beyond the total limit"))


def _member_cap(declared: int | None, limits: Limits) -> int:
    return limits.max_attachment_bytes if declared is None else min(limits.max_attachment_bytes, max(declared, 0))


def _overran(name: str, stored: str) -> Member:
    refused = Unreadable("archive-refused", name, "the member expands beyond its declared size or the limits")
    return Member(name, stored, None, refused)


# ---------------------------------------------------------------------------------------------- zip


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
        infos = [info for info in archive.infolist() if not info.is_dir() and not _skipped(decode_member_name(info))]
        listed = [Listed(decode_member_name(info), info.file_size, info.compress_size) for info in infos]
        check_directory(listed, len(data), filename, limits)
        members: list[Member] = []
        budget = _Budget(filename, limits)
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
                members.append(_overran(name, stored))
                continue
            if isinstance(content, Unreadable):
                members.append(Member(name, stored, None, Unreadable(content.reason, name, content.detail)))
                continue
            budget.spend(len(content))
            members.append(Member(name, stored, content))
        return members


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> bytes | Unreadable | None:
    """The member's bytes; None when it expands past what it declared; Unreadable when broken."""
    cap = _member_cap(info.file_size, limits)
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


# ---------------------------------------------------------------------------------------------- 7z


def read_7z(data: bytes, filename: str, limits: Limits) -> list[Member]:
    """The 7z's files through py7zr, in memory; raises CannotRead as read_zip does."""
    import py7zr
    from py7zr.exceptions import PasswordRequired, UnsupportedCompressionMethodError
    from py7zr.io import BytesIOFactory

    try:
        with py7zr.SevenZipFile(io.BytesIO(data)) as archive:
            if archive.needs_password():
                raise CannotRead(Unreadable("encrypted", filename, "the 7z archive needs a password"))
            infos = [info for info in archive.list() if info.is_file and not info.is_symlink]
            wanted = [info for info in infos if not _skipped(info.filename)]
            listed = [Listed(info.filename, info.uncompressed, info.compressed) for info in wanted]
            check_directory(listed, len(data), filename, limits)
            # each writer keeps at most one byte more than its member declared: an overrun shows
            factory = BytesIOFactory(limits.max_attachment_bytes + 1)
            archive.extract(targets=[info.filename for info in wanted], factory=factory)
    except CannotRead:
        raise
    except PasswordRequired:
        raise CannotRead(Unreadable("encrypted", filename, "the 7z archive needs a password")) from None
    except UnsupportedCompressionMethodError as exc:
        return _7z_by_libarchive(data, filename, limits, str(exc))
    except py7zr.Bad7zFile as exc:
        if "path is bad" not in str(exc):
            raise CannotRead(Unreadable("corrupt", filename, f"broken 7z archive: {exc}"[:300])) from None
        # py7zr refuses names like "..\\x" even when extracting to memory; only safe names are made of them
        return _7z_by_libarchive(data, filename, limits, str(exc))
    except (MemoryError, RecursionError):
        raise  # the caller reports these as what they are, not as damage
    except Exception as exc:  # py7zr and its decoders raise many kinds of errors on damaged streams
        raise CannotRead(
            Unreadable("corrupt", filename, f"broken 7z archive: {type(exc).__name__}: {exc}"[:300])
        ) from None
    members: list[Member] = []
    budget = _Budget(filename, limits)
    for number, info in enumerate(wanted, start=1):
        name = member_name(info.filename, number)
        product = factory.products.get(info.filename)
        if product is None:
            members.append(Member(name, info.filename, b""))
            continue
        product.seek(0)
        content = product.read()
        if len(content) > _member_cap(info.uncompressed, limits):
            members.append(_overran(name, info.filename))
            continue
        budget.spend(len(content))
        members.append(Member(name, info.filename, content))
    return members


def _7z_by_libarchive(data: bytes, filename: str, limits: Limits, why: str) -> list[Member]:
    if _libarchive() is None:
        raise CannotRead(Unreadable("unsupported-format", filename, f"{why}; {LIBARCHIVE_HINT}"[:300]))
    return _read_by_libarchive(data, filename, limits, "7zip")


# ---------------------------------------------------------------------------------------------- rar


def read_rar(data: bytes, filename: str, limits: Limits) -> list[Member]:
    """The RAR's files through libarchive; unsupported-format naming what to install where it is absent."""
    if _libarchive() is None:
        raise CannotRead(Unreadable("unsupported-format", filename, f"no reader for .rar here: {LIBARCHIVE_HINT}"))
    # the format is named, not guessed: a stored .docx inside would make libarchive bid for zip
    return _read_by_libarchive(data, filename, limits, "rar5" if data.startswith(_RAR5_MARKER) else "rar")


def _libarchive() -> ModuleType | None:
    """libarchive-c, or None where it or the C library (libarchive.so.13) is missing."""
    try:
        import libarchive
    except (ImportError, OSError, AttributeError):  # the binding looks the C library up when imported
        return None
    _utf8_names()
    module: ModuleType = libarchive
    return module


def _utf8_names() -> None:
    """libarchive hands names out in the C library's locale: under LC_ALL=C a Chinese name is lost."""
    if locale.nl_langinfo(locale.CODESET).replace("-", "").upper() == "UTF8":
        return
    for name in ("C.UTF-8", "C.utf8", "en_US.UTF-8"):
        try:
            locale.setlocale(locale.LC_CTYPE, name)
        except locale.Error:
            continue
        return


def _read_by_libarchive(data: bytes, filename: str, limits: Limits, format_name: str) -> list[Member]:
    libarchive = _libarchive()
    assert libarchive is not None
    error: type[Exception] = libarchive.ArchiveError
    try:
        # a first pass reads the headers alone: the directory is judged before anything is expanded
        listed = [item for item, _ in _libarchive_entries(libarchive, data, format_name, None)]
        check_directory(listed, len(data), filename, limits)
        members: list[Member] = []
        budget = _Budget(filename, limits)
        entries = _libarchive_entries(libarchive, data, format_name, limits)
        for number, (item, content) in enumerate(entries, start=1):
            name = member_name(item.stored_name, number)
            if isinstance(content, Unreadable):
                members.append(Member(name, item.stored_name, None, Unreadable(content.reason, name, content.detail)))
                continue
            if content is None:
                members.append(_overran(name, item.stored_name))
                continue
            budget.spend(len(content))
            members.append(Member(name, item.stored_name, content))
        return members
    except CannotRead:
        raise
    except error as exc:
        message = str(exc).split(" (errno=", 1)[0]
        if "ncrypt" in message or "assphrase" in message:
            raise CannotRead(Unreadable("encrypted", filename, f"the archive needs a password: {message}")) from None
        raise CannotRead(Unreadable("corrupt", filename, f"broken archive: {message}"[:300])) from None


def _libarchive_entries(
    libarchive: ModuleType, data: bytes, format_name: str, limits: Limits | None
) -> Iterator[tuple[Listed, bytes | Unreadable | None]]:
    """Regular files in order; with ``limits``, also their bytes (None for a member past its declared size)."""
    encrypted = _encryption_test(libarchive)
    with libarchive.memory_reader(data, format_name=format_name) as archive:
        for entry in archive:
            if not entry.isreg:
                continue
            stored = _entry_name(entry)
            if _skipped(stored):
                continue
            declared = entry.size if entry.size is not None and entry.size >= 0 else None
            item = Listed(stored, declared, None)
            if limits is None:
                yield item, None
                continue
            if encrypted(entry):
                yield item, Unreadable("encrypted", stored, "the archive member needs a password")
                continue
            yield item, _bounded(entry.get_blocks(_BLOCK), _member_cap(declared, limits))


def _entry_name(entry: Any) -> str:
    """The member's name; one in a legacy code page (RAR 4 without LHD_UNICODE: GBK on Chinese
    Windows) comes as bytes the locale could not convert, and is decoded as mail headers are."""
    try:
        name = entry.pathname
    except UnicodeDecodeError:
        name = None
    if isinstance(name, bytes):
        return decode_bytes(name)
    return str(name or "")


def _encryption_test(libarchive: ModuleType) -> Callable[[Any], bool]:
    """archive_entry_is_data_encrypted (libarchive ≥ 3.2), which libarchive-c does not wrap."""
    function = getattr(libarchive.ffi.libarchive, "archive_entry_is_data_encrypted", None)
    if function is None:
        return lambda entry: False
    # without declared types ctypes would pass the pointer as a 32-bit int
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return lambda entry: bool(function(entry._entry_p) > 0)


def _bounded(blocks: Iterable[bytes], cap: int) -> bytes | None:
    """The blocks joined, or None as soon as they pass ``cap`` (the next header skips the rest)."""
    buffer = bytearray()
    for block in blocks:
        buffer.extend(block)
        if len(buffer) > cap:
            return None
    return bytes(buffer)
