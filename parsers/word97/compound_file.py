"""[MS-CFB] the Compound File a Word 97-2003 or WPS document is stored in, opened with olefile.

Its streams (``WordDocument``, ``0Table``/``1Table``, ``Data``) are read whole; a damaged header,
FAT or sector chain makes the file :class:`Broken`, never a partial reading.
"""

from __future__ import annotations

import io

import olefile

# [MS-CFB] 2.2 Compound File Header signature.
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class Broken(Exception):
    """A structure points outside its stream or contradicts itself."""


class CompoundFile:
    """The Compound File, closed on exit; olefile's own failures become Broken."""

    def __init__(self, data: bytes) -> None:
        try:
            self.ole = olefile.OleFileIO(io.BytesIO(data))
        except Exception as exc:  # olefile raises many kinds on a damaged header or FAT
            raise Broken(f"not a readable compound file: {type(exc).__name__}: {exc}") from None

    def __enter__(self) -> CompoundFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.ole.close()


def open_compound_file(data: bytes) -> CompoundFile:
    if not data.startswith(OLE_SIGNATURE):
        raise Broken("no compound-file signature")
    return CompoundFile(data)


def read_stream(container: CompoundFile, name: str, limit: int | None = None) -> bytes:
    try:
        if not container.ole.exists(name):
            raise Broken(f"no {name} stream")
        with container.ole.openstream(name) as stream:
            data: bytes = stream.read() if limit is None else stream.read(limit)
    except Broken:
        raise
    except Exception as exc:  # a broken sector chain
        raise Broken(f"the {name} stream cannot be read: {type(exc).__name__}: {exc}") from None
    return data
