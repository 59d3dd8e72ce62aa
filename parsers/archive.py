"""Members of a .zip, .7z or .rar, read in memory within the limits: no member name ever reaches the file system.

Every format goes through the same containment before a byte is expanded (parsers.archive_containment:
the member count, the declared total size, the expansion ratio, each member cut off at the size it
declared). Nesting depth is counted by the caller (parsers.documents), which examines every member
like an attachment of its own. The formats: parsers.archive_zip (the standard library, with the
name encodings Chinese archivers write) and parsers.archive_libarchive (7z through py7zr, RAR
through libarchive).
"""

from __future__ import annotations

from typing import Literal

from parsers.archive_containment import Member
from parsers.archive_libarchive import read_7z, read_rar
from parsers.archive_zip import read_zip
from parsers.limits import Limits

ArchiveKind = Literal["zip", "7z", "rar"]
ARCHIVE_KINDS: frozenset[str] = frozenset({"zip", "7z", "rar"})


def read_archive(data: bytes, filename: str, kind: ArchiveKind, limits: Limits) -> list[Member]:
    """The archive's files; raises CannotRead for a broken, unsupported or bomb-like archive."""
    if kind == "zip":
        return read_zip(data, filename, limits)
    if kind == "7z":
        return read_7z(data, filename, limits)
    return read_rar(data, filename, limits)
