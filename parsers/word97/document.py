"""One Word 97-2003 or WPS document read: its FIB, text, properties and what the reader makes of them.

The parts of [MS-DOC] each live in a module of their own in this package; this one puts them
together (:class:`WordDocument`) and gives the readers' entry points, :func:`read_doc` and
:func:`refuse_if_encrypted`.
"""

from __future__ import annotations

import bisect
import struct

from parsers.docx_reader import DocxText
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.model import Unreadable
from parsers.word97.compound_file import Broken, CompoundFile, open_compound_file, read_stream
from parsers.word97.fib import CLX, FIB_BYTES, FIB_WHICH_TABLE, PLCF_BTE_CHPX, PLCF_BTE_PAPX, Fib, check_fib_base
from parsers.word97.fkp import read_fkp_runs
from parsers.word97.piece_table import PieceTable
from parsers.word97.sprms import (
    PLAIN,
    SPRM_C_PIC_LOCATION,
    SPRM_C_RMARK_DEL,
    ParagraphProperties,
    paragraph_properties,
    sprms,
)
from parsers.word97.tables import BlockBuilder
from parsers.word97.text import Paragraph, paragraphs_of


def refuse_if_encrypted(data: bytes, filename: str) -> None:
    """Raise CannotRead("encrypted") when the FIB says the document is password-protected.

    Only the FibBase is looked at: cheap enough to ask before handing the file to LibreOffice,
    which would otherwise report a password-protected document as broken.
    """
    try:
        with open_compound_file(data) as container:
            fib = read_stream(container, "WordDocument", 64)
        if len(fib) >= 12:
            check_fib_base(fib, filename)
    except Broken:
        return  # LibreOffice may still make sense of it
    except CannotRead as exc:
        if exc.reason.reason == "encrypted":
            raise
        # a Word 6/95 file: LibreOffice reads those


def read_doc(data: bytes, filename: str, limits: Limits) -> DocxText:
    """The document's blocks; raises CannotRead with the reason it cannot be read."""
    try:
        with open_compound_file(data) as container:
            document = WordDocument(container, filename, limits)
            paragraphs = document.paragraphs()
            boxes = document.text_box_paragraphs()
    except Broken as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken Word 97-2003 document: {exc}")) from None
    except (struct.error, IndexError, ValueError, EOFError) as exc:
        detail = f"broken Word 97-2003 document: {type(exc).__name__}: {exc}"[:300]
        raise CannotRead(Unreadable("corrupt", filename, detail)) from None
    builder = BlockBuilder(filename, tables_known=document.paragraph_properties_known)
    for paragraph in paragraphs:
        builder.add(paragraph)
    builder.finish()
    for paragraph in boxes:  # text boxes (and the tables in them) after the body
        builder.add(paragraph)
    builder.finish()
    diagnostics = [f"{filename}: read natively as a Word 97-2003 document ({len(paragraphs)} paragraphs)"]
    return DocxText(builder.blocks, diagnostics)


class WordDocument:
    """The text and paragraph properties of one WordDocument stream."""

    def __init__(self, container: CompoundFile, filename: str, limits: Limits) -> None:
        if not container.ole.exists("WordDocument"):
            if not container.ole.listdir():
                raise Broken("the compound file holds no streams")
            detail = "a compound file without a WordDocument stream: not a Word document (a Works file, a spreadsheet?)"
            raise CannotRead(Unreadable("unsupported-format", filename, detail))
        stream = read_stream(container, "WordDocument")
        if len(stream) < FIB_BYTES:
            raise Broken("the FIB is cut off")
        check_fib_base(stream, filename)
        (flags,) = struct.unpack_from("<H", stream, 10)
        table = read_stream(container, "1Table" if flags & FIB_WHICH_TABLE else "0Table")
        self.data = read_stream(container, "Data") if container.ole.exists("Data") else b""
        self.fib = Fib.read(stream)
        self.text = PieceTable.read(self.fib.table_slice(stream, table, CLX), stream, limits, filename)
        papx = self.fib.table_slice(stream, table, PLCF_BTE_PAPX)
        self.paragraph_runs = read_fkp_runs(papx, stream, self.data, filename, paragraphs=True)
        self.paragraph_properties_known = bool(self.paragraph_runs)
        chpx = self.fib.table_slice(stream, table, PLCF_BTE_CHPX)
        self.character_runs = read_fkp_runs(chpx, stream, self.data, filename, paragraphs=False)
        self.deleted = self._deleted_ranges()

    def _deleted_ranges(self) -> list[tuple[int, int]]:
        """Byte ranges of text marked deleted (sprmCFRMarkDel) by tracked changes."""
        ranges = []
        for start, end, grpprl in self.character_runs:
            for sprm, operand in sprms(grpprl):
                # a ToggleOperand: 0x01 on, or 0x81 the opposite of the style's (which is never deleted)
                if sprm == SPRM_C_RMARK_DEL and operand[:1] in (b"\x01", b"\x81"):
                    ranges.append((start, end))
        return ranges

    def is_deleted(self, starts: list[int], offset: int) -> bool:
        at = bisect.bisect_right(starts, offset) - 1
        return at >= 0 and self.deleted[at][0] <= offset < self.deleted[at][1]

    def checkbox_at(self, starts: list[int], offset: int) -> bool | None:
        """The state of the check box whose FFData the character at ``offset`` points to, if any.

        The 0x01 in a FORMCHECKBOX field's instruction carries sprmCPicLocation: a position in the
        Data stream of a NilPICFAndBinData ([MS-DOC] 2.9.159: lcb, cbHeader 0x44, 62 bytes) whose
        binData is the FFData (2.9.78): version, then bits with iType (1: check box) and iRes (0
        unchecked, 1 checked, 25 the default wDef), cch, hps, xstzName, wDef.
        """
        at = bisect.bisect_right(starts, offset) - 1
        if at < 0 or not self.character_runs[at][0] <= offset < self.character_runs[at][1]:
            return None
        for sprm, operand in sprms(self.character_runs[at][2]):
            if sprm != SPRM_C_PIC_LOCATION or len(operand) != 4:
                continue
            (position,) = struct.unpack("<I", operand)
            data = self.data[position : position + 68 + 12 + 2 * 256 + 6]
            if len(data) < 68 + 10 or struct.unpack_from("<H", data, 4)[0] != 0x44:
                return None
            version, bits = struct.unpack_from("<IH", data, 68)
            if version != 0xFFFFFFFF or bits & 0x3 != 1:
                return None
            result = (int(bits) >> 2) & 0x1F
            if result in (0, 1):
                return result == 1
            (name_length,) = struct.unpack_from("<H", data, 68 + 10)
            default_at = 68 + 12 + 2 * name_length + 2
            if default_at + 2 > len(data):
                return None
            return bool(struct.unpack_from("<H", data, default_at)[0] == 1)
        return None

    def properties_at(self, starts: list[int], offset: int) -> ParagraphProperties:
        at = bisect.bisect_right(starts, offset) - 1
        if at < 0 or not self.paragraph_runs[at][0] <= offset < self.paragraph_runs[at][1]:
            return PLAIN
        return paragraph_properties(self.paragraph_runs[at][2])

    # --- the text ----------------------------------------------------------------------------------

    def paragraphs(self) -> list[Paragraph]:
        """The main document's paragraphs, fields shown as their results, deletions left out."""
        return paragraphs_of(self, 0, self.fib.ccp_text)

    def text_box_paragraphs(self) -> list[Paragraph]:
        """The text boxes' paragraphs, read as the main document's are."""
        if self.fib.ccp_txbx == 0:
            return []
        start = self.fib.text_box_start
        return paragraphs_of(self, start, start + self.fib.ccp_txbx)
