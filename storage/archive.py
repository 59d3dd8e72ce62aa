"""The raw-message archive: every message's exact bytes, content-addressed by sha256.

A message is written here, flushed to disk and renamed into place before it is recorded in the
database or touched on the IMAP server, so a crash at any moment leaves either no file or a whole
one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from storage.failpoints import failpoint

DIR_MODE = 0o700
FILE_MODE = 0o600
HEAD_BYTES = 256 * 1024  # header sections are a few KB; a long Received chain stays far below this
# files of one batch written side by side: their flushes to disk overlap (and join the same journal
# commits) instead of queueing one behind the other
WRITERS_AT_ONCE = 4


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_private_dir(path: Path) -> None:
    """Create ``path`` readable by the owner only, and so every folder it has to create on the way."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(folder, DIR_MODE)
    os.chmod(path, DIR_MODE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old state or the whole new file."""
    make_private_dir(path.parent)
    write_pieces_atomic(path.parent, [data], lambda: path)


def write_pieces_atomic(directory: Path, pieces: Iterable[bytes], target: Callable[[], Path]) -> Path:
    """Write ``pieces`` to a new file in ``directory``, flush it to disk, then rename it to ``target()``.

    ``target`` is asked after the last piece (a content-addressed name is known only then); the
    file appears there whole or not at all. Returns where it went.
    """
    failpoint("archive.write")
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, FILE_MODE)
        final = target()
        failpoint("archive.rename")
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    return final


@dataclass(frozen=True)
class Archived:
    """A message stored without being held whole: its digest, its size and its first bytes."""

    digest: str
    size: int
    head: bytes


class RawArchive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / f"{digest}.eml"

    def put(self, raw: bytes) -> str:
        """Store ``raw`` durably and return its sha256; storing the same bytes twice is a no-op."""
        digest = sha256_hex(raw)
        target = self.path_for(digest)
        if not target.exists():
            make_private_dir(self.root)
            write_atomic(target, raw)
        return digest

    def put_all(self, raws: Sequence[bytes]) -> list[str]:
        """``put`` each of ``raws``, several at once; their sha256 in order, once every one is on disk.

        A failure of any is raised after the rest have finished: what was written stays (the
        archive keeps a file once, by content), and nothing refers to it until it is recorded.
        """
        if len(raws) < 2:
            return [self.put(raw) for raw in raws]
        with ThreadPoolExecutor(max_workers=min(WRITERS_AT_ONCE, len(raws)), thread_name_prefix="archive") as pool:
            writing = [pool.submit(self.put, raw) for raw in raws]
        return [future.result() for future in writing]

    def put_pieces(self, pieces: Iterable[bytes]) -> Archived:
        """Store a message arriving in pieces durably, never holding more than one piece of it."""
        make_private_dir(self.root)
        digest = hashlib.sha256()
        head = bytearray()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                if len(head) < HEAD_BYTES:
                    head.extend(piece[: HEAD_BYTES - len(head)])
                yield piece

        def named_by_content() -> Path:
            target = self.path_for(digest.hexdigest())
            make_private_dir(target.parent)
            return target  # the same bytes under the same name, if it was there

        write_pieces_atomic(self.root, counted(), named_by_content)
        return Archived(digest.hexdigest(), size, bytes(head))

    def get(self, digest: str) -> bytes:
        return self.path_for(digest).read_bytes()

    def head(self, digest: str, most: int = HEAD_BYTES) -> bytes:
        """The first ``most`` bytes: a message's header section, without reading a large body."""
        with self.path_for(digest).open("rb") as handle:
            return handle.read(most)

    def contains(self, digest: str) -> bool:
        return self.path_for(digest).exists()

    def remove(self, digest: str) -> bool:
        target = self.path_for(digest)
        if not target.exists():
            return False
        target.unlink()
        return True
