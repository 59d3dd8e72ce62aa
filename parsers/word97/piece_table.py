"""[MS-DOC] 2.9.38 Clx, 2.9.178 Pcdt, 2.8.35 PlcPcd, 2.9.177 Pcd, 2.9.73 FcCompressed: the piece table.

It says where each run of characters of the document is stored in the WordDocument stream, and
whether as 8-bit or UTF-16LE text ([MS-DOC] 2.4.1 "Retrieving Text").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.word97.compound_file import Broken

# [MS-DOC] 2.9.73 FcCompressed: the 8-bit text is cp1252-like; these bytes differ from Latin-1.
_COMPRESSED_SPECIALS = {
    0x82: 0x201A, 0x83: 0x0192, 0x84: 0x201E, 0x85: 0x2026, 0x86: 0x2020, 0x87: 0x2021,
    0x88: 0x02C6, 0x89: 0x2030, 0x8A: 0x0160, 0x8B: 0x2039, 0x8C: 0x0152, 0x91: 0x2018,
    0x92: 0x2019, 0x93: 0x201C, 0x94: 0x201D, 0x95: 0x2022, 0x96: 0x2013, 0x97: 0x2014,
    0x98: 0x02DC, 0x99: 0x2122, 0x9A: 0x0161, 0x9B: 0x203A, 0x9C: 0x0153, 0x9F: 0x0178,
}  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """[MS-DOC] 2.9.177 Pcd: characters [cp_start, cp_end) stored from byte ``offset``."""

    cp_start: int
    cp_end: int
    offset: int
    compressed: bool

    @property
    def width(self) -> int:
        return 1 if self.compressed else 2


class PieceTable:
    """The pieces of one document's text, and the text of a range of character positions."""

    def __init__(self, pieces: list[Piece], stream: bytes, limits: Limits, filename: str) -> None:
        self.pieces = pieces
        self.stream = stream
        self.limits = limits
        self.filename = filename

    @classmethod
    def read(cls, clx: bytes, stream: bytes, limits: Limits, filename: str) -> PieceTable:
        """The Clx's Pcdt (its Prcs skipped), every Pcd checked against the WordDocument stream."""
        offset = 0
        while offset < len(clx) and clx[offset] == 0x01:  # Prc: clxt 1, cbGrpprl, GrpPrl (skipped)
            (size,) = struct.unpack_from("<h", clx, offset + 1)
            if size < 0:
                raise Broken("a Prc of negative size")
            offset += 3 + size
        if offset >= len(clx) or clx[offset] != 0x02:  # Pcdt: clxt 2, lcb, PlcPcd
            raise Broken("no piece table (Pcdt) in the Clx")
        (size,) = struct.unpack_from("<I", clx, offset + 1)
        plc = clx[offset + 5 : offset + 5 + size]
        if len(plc) != size or size < 4 or (size - 4) % 12:
            raise Broken("the piece table (PlcPcd) is cut off")
        count = (size - 4) // 12
        if count > limits.doc_max_pieces:
            raise CannotRead(Unreadable("too-large", filename, f"{count} text pieces (limit {limits.doc_max_pieces})"))
        positions = struct.unpack_from(f"<{count + 1}I", plc, 0)
        pieces = []
        for number in range(count):
            (fc_compressed,) = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * number + 2)  # Pcd.fc
            compressed = bool(fc_compressed & 0x40000000)
            fc = fc_compressed & 0x3FFFFFFF
            piece = Piece(positions[number], positions[number + 1], fc // 2 if compressed else fc, compressed)
            if piece.cp_end < piece.cp_start:
                raise Broken("the piece table's positions go backwards")
            if piece.offset + (piece.cp_end - piece.cp_start) * piece.width > len(stream):
                raise Broken("a text piece lies past the end of the WordDocument stream")
            pieces.append(piece)
        return cls(pieces, stream, limits, filename)

    def segments(self, cp_start: int, cp_end: int) -> list[tuple[str, int, int]]:
        """The text of [cp_start, cp_end) piece by piece: (text, its first byte offset, bytes per character).

        Only what the piece table holds is counted: a FIB claiming more text than there is gets what
        there is.
        """
        held = min(cp_end, max((piece.cp_end for piece in self.pieces), default=0)) - cp_start
        if held > self.limits.doc_max_chars:
            detail = f"{held} characters of text (limit {self.limits.doc_max_chars})"
            raise CannotRead(Unreadable("too-large", self.filename, detail))
        found: list[tuple[str, int, int]] = []
        for piece in self.pieces:
            start, end = max(cp_start, piece.cp_start), min(cp_end, piece.cp_end)
            if start >= end:
                continue
            first = piece.offset + (start - piece.cp_start) * piece.width
            raw = self.stream[first : first + (end - start) * piece.width]
            if piece.compressed:
                text = raw.decode("latin-1").translate(_COMPRESSED_SPECIALS)
            else:
                text = raw.decode("utf-16-le", "replace")
            found.append((text, first, piece.width))
        return found
