"""Members of a .7z (py7zr, in memory) or a .rar (libarchive), within the limits of parsers.archive_containment.

A 7z coder py7zr lacks (BCJ2) falls back to libarchive. libarchive (Debian's libarchive13, through
libarchive-c) 3.6 reads RAR 1.5–4.x (RAR 2.9/3.x/4.x archives, solid or not, without encryption)
and RAR 5.0; encrypted RAR and multi-volume sets are not read.
"""

from __future__ import annotations

import ctypes
import io
import locale
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from parsers.archive_containment import (
    Budget,
    Listed,
    Member,
    bounded,
    check_directory,
    member_cap,
    member_name,
    overran,
    skipped,
)
from parsers.charsets import decode_bytes
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable

LIBARCHIVE_HINT = (
    "install libarchive (Debian: apt-get install libarchive13; Python: pip install libarchive-c) to read it, "
    "or ask for a .zip"
)

_BLOCK = 64 * 1024
_RAR5_MARKER = b"Rar!\x1a\x07\x01\x00"


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
            wanted = [info for info in infos if not skipped(info.filename)]
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
    budget = Budget(filename, limits)
    for number, info in enumerate(wanted, start=1):
        name = member_name(info.filename, number)
        product = factory.products.get(info.filename)
        if product is None:
            members.append(Member(name, info.filename, b""))
            continue
        product.seek(0)
        content = product.read()
        if len(content) > member_cap(info.uncompressed, limits):
            members.append(overran(name, info.filename))
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
        budget = Budget(filename, limits)
        entries = _libarchive_entries(libarchive, data, format_name, limits)
        for number, (item, content) in enumerate(entries, start=1):
            name = member_name(item.stored_name, number)
            if isinstance(content, Unreadable):
                members.append(Member(name, item.stored_name, None, Unreadable(content.reason, name, content.detail)))
                continue
            if content is None:
                members.append(overran(name, item.stored_name))
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
            if skipped(stored):
                continue
            declared = entry.size if entry.size is not None and entry.size >= 0 else None
            item = Listed(stored, declared, None)
            if limits is None:
                yield item, None
                continue
            if encrypted(entry):
                yield item, Unreadable("encrypted", stored, "the archive member needs a password")
                continue
            yield item, bounded(entry.get_blocks(_BLOCK), member_cap(declared, limits))


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
