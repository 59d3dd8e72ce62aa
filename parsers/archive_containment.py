"""What every archive format goes through before a byte is expanded, and what a member becomes.

The member count, the total size the directory declares, the ratio of expanded to compressed size
(per member where the format says, for the whole archive where it does not, as in solid 7z and
RAR) and, while reading, each member cut off at the size it declared and all of them at the total
limit. Directories, links, devices and the desktop's bookkeeping files are skipped; a member's name
is only ever made into a safe display name. Outlook's containers (parsers.outlook) use the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.textnorm import safe_filename

_SKIPPED_PREFIXES = ("__MACOSX/",)
_SKIPPED_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")
_RATIO_FLOOR = 1024 * 1024  # small members may compress extremely well without being bombs


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


def member_name(stored: str, number: int) -> str:
    return safe_filename(stored.replace("\\", "/").rsplit("/", 1)[-1], f"member-{number}")


def skipped(name: str) -> bool:
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


class Budget:
    """What the members may still expand to, all together; a member past it refuses the archive."""

    def __init__(self, filename: str, limits: Limits) -> None:
        self.filename = filename
        self.left = limits.archive_max_total_bytes

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise CannotRead(Unreadable("archive-refused", self.filename, "the members expand beyond the total limit"))


def member_cap(declared: int | None, limits: Limits) -> int:
    return limits.max_attachment_bytes if declared is None else min(limits.max_attachment_bytes, max(declared, 0))


def overran(name: str, stored: str) -> Member:
    refused = Unreadable("archive-refused", name, "the member expands beyond its declared size or the limits")
    return Member(name, stored, None, refused)


def bounded(blocks: Iterable[bytes], cap: int) -> bytes | None:
    """The blocks joined, or None as soon as they pass ``cap`` (the next header skips the rest)."""
    buffer = bytearray()
    for block in blocks:
        buffer.extend(block)
        if len(buffer) > cap:
            return None
    return bytes(buffer)
