"""Word 97-2003 (.doc) and WPS Office (.wps) documents to lines and grids, without LibreOffice.

Both are Compound Files ([MS-CFB], opened with olefile) holding a ``WordDocument`` stream in the
binary format of [MS-DOC]. The text is found through the File Information Block and the piece
table; the table structure through the paragraph properties of each paragraph mark. The result is
the same model the .docx reader gives (parsers.layout), so label/value pairing is written once.

What is read, in [MS-DOC]'s terms:

- 2.5.1 Fib: FibBase (wIdent, nFib, fEncrypted, fWhichTblStm, fObfuscated), FibRgLw97 (ccpText,
  ccpFtn, ccpHdd, ccpAtn, ccpEdn, ccpTxbx) and FibRgFcLcb97 (fcClx/lcbClx, fcPlcfBtePapx,
  fcPlcfBteChpx), which point into the 0Table or 1Table stream.
- 2.9.38 Clx, 2.9.178 Pcdt, 2.8.35 PlcPcd, 2.9.177 Pcd, 2.9.73 FcCompressed: the piece table, which
  says where each run of characters is stored and whether as 8-bit or UTF-16LE text.
- 2.4.1 "Retrieving Text", 2.4.2 "Determining Paragraph Boundaries": the main document is the
  character positions [0, ccpText); a paragraph ends at 0x0D, at a cell mark 0x07 or a section
  mark 0x0C.
- 2.8.6 PlcBtePapx, 2.9.175 PapxFkp, 2.9.174 PapxInFkp, 2.9.23 BxPap: the paragraph properties
  (sprms) of each paragraph mark; 2.8.5 PlcBteChpx, 2.9.33 ChpxFkp, 2.9.32 Chpx for characters.
- 2.4.3 "Overview of Tables", 2.4.4 "Determining Cell Boundaries": a paragraph with sprmPFInTable
  is in a table at depth sprmPItap; at depth 1 a cell ends at 0x07 and a row at the 0x07 of a TTP
  paragraph (sprmPFTtp); deeper, sprmPFInnerTableCell and sprmPFInnerTtp mark them.
- 2.6.4 sprmTDefTable (TDefTableOperand, 2.9.319 TC80, 2.9.311 TCGRF) and sprmTVertMerge: the cell
  edges of each row (merged cells span the columns their edges cover) and vertical merges.
- 2.8.25 "Fields": 0x13 begins a field, 0x14 separates its instruction from its result, 0x15 ends
  it; only the result is text a reader sees. A FORMCHECKBOX field has no result: its state is in
  the FFData (2.9.78) its instruction's 0x01 points to by sprmCPicLocation, shown as ☑ or ☐.
- 2.2.5 Sprm (the operand size from spra) and sprmCFRMarkDel: text deleted with tracked changes
  is left out, as Word shows it once the changes are accepted.

Every count is bounded by the file's own size and by parsers.limits; a structure that points
outside its stream makes the file ``corrupt``, never a partial reading.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import olefile

from parsers.docx_reader import DocxText
from parsers.errors import CannotRead
from parsers.layout import Block, Cell, Grid, Line
from parsers.limits import Limits
from parsers.model import Location, Unreadable

# [MS-CFB] 2.2 Compound File Header signature.
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_WORD_IDENT = 0xA5EC  # FibBase.wIdent
_OLDER_WORD_IDENTS = frozenset({0xA5DC, 0xA699})  # Word 6/95 and Word 2 files, whose FIB differs
_WORD97_NFIB = 0x00C0  # FibBase.nFib of Word 97 and later; Word 6/95 (101..105) store a different Fib
_FIB_ENCRYPTED = 0x0100  # FibBase.fEncrypted
_FIB_WHICH_TABLE = 0x0200  # FibBase.fWhichTblStm: 1Table (set) or 0Table
_FIB_OBFUSCATED = 0x8000  # FibBase.fObfuscated: with fEncrypted, XOR obfuscation (also a password)
# Indices of fc/lcb pairs in FibRgFcLcb97.
_PLCF_BTE_CHPX = 12
_PLCF_BTE_PAPX = 13
_CLX = 33
_PAGE = 512  # an FKP is one 512-byte page of the WordDocument stream

# Characters ([MS-DOC] 2.4.1 and 2.8.25).
_PARAGRAPH_END = "\r"
_CELL_MARK = "\x07"
_SECTION_MARK = "\x0c"
_PARAGRAPH_ENDS = frozenset((_PARAGRAPH_END, _CELL_MARK, _SECTION_MARK))
_FIELD_BEGIN, _FIELD_SEPARATOR, _FIELD_END = "\x13", "\x14", "\x15"
_PICTURE = "\x01"  # an object anchor; in a form field's instruction, where its FFData is
_CHECKED, _UNCHECKED = "☑", "☐"  # as the .docx reader shows legacy check boxes
_KEPT_CONTROLS = {"\t": "\t", "\x0b": "\n", "\x1e": "-"}  # tab, line break, non-breaking hyphen

# [MS-DOC] 2.9.73 FcCompressed: the 8-bit text is cp1252-like; these bytes differ from Latin-1.
_COMPRESSED_SPECIALS = {
    0x82: 0x201A, 0x83: 0x0192, 0x84: 0x201E, 0x85: 0x2026, 0x86: 0x2020, 0x87: 0x2021,
    0x88: 0x02C6, 0x89: 0x2030, 0x8A: 0x0160, 0x8B: 0x2039, 0x8C: 0x0152, 0x91: 0x2018,
    0x92: 0x2019, 0x93: 0x201C, 0x94: 0x201D, 0x95: 0x2022, 0x96: 0x2013, 0x97: 0x2014,
    0x98: 0x02DC, 0x99: 0x2122, 0x9A: 0x0161, 0x9B: 0x203A, 0x9C: 0x0153, 0x9F: 0x0178,
}  # fmt: skip

# Sprms ([MS-DOC] 2.6.2 paragraph, 2.6.3 table, 2.6.1 character properties).
_SPRM_P_IN_TABLE = 0x2416
_SPRM_P_TTP = 0x2417
_SPRM_P_ITAP = 0x6649
_SPRM_P_DTAP = 0x664A
_SPRM_P_INNER_TABLE_CELL = 0x244B
_SPRM_P_INNER_TTP = 0x244C
_SPRM_P_HUGE_PAPX = 0x6646
_SPRM_P_CHG_TABS = 0xC615
_SPRM_T_DEF_TABLE = 0xD608
_SPRM_T_DEF_TABLE10 = 0xD606
_SPRM_T_VERT_MERGE = 0xD62B
_SPRM_C_RMARK_DEL = 0x0800
_SPRM_C_PIC_LOCATION = 0x6A03
_OPERAND_SIZE = {0: 1, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2, 7: 3}  # by spra; 6 is variable
_MAX_CELLS = 64  # TDefTableOperand.NumberOfColumns is at most 63
_MAX_DEPTH = 16  # nested tables
_MAX_FKP_PAGES = 8192  # 4 MiB of formatting pages: far beyond a form (a 300-page book needs about 600)


class _Broken(Exception):
    """A structure points outside its stream or contradicts itself."""


@dataclass(frozen=True)
class _Piece:
    """[MS-DOC] 2.9.177 Pcd: characters [cp_start, cp_end) stored from byte ``offset``."""

    cp_start: int
    cp_end: int
    offset: int
    compressed: bool

    @property
    def width(self) -> int:
        return 1 if self.compressed else 2


@dataclass(frozen=True)
class _CellEdges:
    """One cell of a row as sprmTDefTable describes it."""

    left: int
    right: int
    merged_into_previous: bool  # TCGRF.horzMerge: a legacy horizontal merge
    continued: bool  # TCGRF.vertMerge / sprmTVertMerge: the lower part of a vertical merge


@dataclass(frozen=True)
class _ParagraphProperties:
    in_table: bool = False
    depth: int = 0  # sprmPItap, 1 for an ordinary table
    row_end: bool = False  # sprmPFTtp
    inner_cell_end: bool = False  # sprmPFInnerTableCell
    inner_row_end: bool = False  # sprmPFInnerTtp
    cells: tuple[_CellEdges, ...] = ()  # a row end's sprmTDefTable


_PLAIN = _ParagraphProperties()


@dataclass
class _Field:
    """An open field ([MS-DOC] 2.8.25): its instruction until the separator, then its result."""

    in_result: bool = False
    instruction: str = ""
    checked: bool | None = None  # a FORMCHECKBOX's state, shown when the field ends


@dataclass
class _Paragraph:
    text: str
    mark: str
    properties: _ParagraphProperties


@dataclass
class _Table:
    number: int
    rows: list[tuple[list[str], tuple[_CellEdges, ...]]] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)  # the finished cells of the current row
    lines: list[str] = field(default_factory=list)  # the paragraphs of the current cell
    nested: list[Block] = field(default_factory=list)  # grids of tables inside this one, in order

    def end_cell(self) -> None:
        self.cells.append("\n".join(self.lines))
        self.lines = []

    def end_row(self, edges: tuple[_CellEdges, ...]) -> None:
        if self.lines:
            self.end_cell()
        if self.cells:
            self.rows.append((self.cells, edges))
        self.cells = []

    def grid(self, filename: str) -> Grid:
        self.end_row(())
        return Grid(_grid_rows(self.rows), Location(filename, table=self.number))


def refuse_if_encrypted(data: bytes, filename: str) -> None:
    """Raise CannotRead("encrypted") when the FIB says the document is password-protected.

    Only the FibBase is looked at: cheap enough to ask before handing the file to LibreOffice,
    which would otherwise report a password-protected document as broken.
    """
    try:
        with _open_container(data) as container:
            fib = _read_stream(container, "WordDocument", 64)
        if len(fib) >= 12:
            _check_fib_base(fib, filename)
    except _Broken:
        return  # LibreOffice may still make sense of it
    except CannotRead as exc:
        if exc.reason.reason == "encrypted":
            raise
        # a Word 6/95 file: LibreOffice reads those


def read_doc(data: bytes, filename: str, limits: Limits) -> DocxText:
    """The document's blocks; raises CannotRead with the reason it cannot be read."""
    try:
        with _open_container(data) as container:
            document = _WordDocument(container, filename, limits)
            paragraphs = document.paragraphs()
            boxes = document.text_box_paragraphs()
    except _Broken as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken Word 97-2003 document: {exc}")) from None
    except (struct.error, IndexError, ValueError, EOFError) as exc:
        detail = f"broken Word 97-2003 document: {type(exc).__name__}: {exc}"[:300]
        raise CannotRead(Unreadable("corrupt", filename, detail)) from None
    builder = _BlockBuilder(filename, tables_known=document.paragraph_properties_known)
    for paragraph in paragraphs:
        builder.add(paragraph)
    builder.finish()
    for paragraph in boxes:  # text boxes (and the tables in them) after the body
        builder.add(paragraph)
    builder.finish()
    diagnostics = [f"{filename}: read natively as a Word 97-2003 document ({len(paragraphs)} paragraphs)"]
    return DocxText(builder.blocks, diagnostics)


class _Container:
    """The Compound File, closed on exit; olefile's own failures become _Broken."""

    def __init__(self, data: bytes) -> None:
        try:
            self.ole = olefile.OleFileIO(io.BytesIO(data))
        except Exception as exc:  # olefile raises many kinds on a damaged header or FAT
            raise _Broken(f"not a readable compound file: {type(exc).__name__}: {exc}") from None

    def __enter__(self) -> _Container:
        return self

    def __exit__(self, *_: object) -> None:
        self.ole.close()


def _open_container(data: bytes) -> _Container:
    if not data.startswith(OLE_SIGNATURE):
        raise _Broken("no compound-file signature")
    return _Container(data)


def _read_stream(container: _Container, name: str, limit: int | None = None) -> bytes:
    try:
        if not container.ole.exists(name):
            raise _Broken(f"no {name} stream")
        with container.ole.openstream(name) as stream:
            data: bytes = stream.read() if limit is None else stream.read(limit)
    except _Broken:
        raise
    except Exception as exc:  # a broken sector chain
        raise _Broken(f"the {name} stream cannot be read: {type(exc).__name__}: {exc}") from None
    return data


def _check_fib_base(fib: bytes, filename: str) -> None:
    """[MS-DOC] 2.5.2 FibBase: the identification and the password flags."""
    ident, nfib = struct.unpack_from("<HH", fib, 0)
    (flags,) = struct.unpack_from("<H", fib, 10)
    if ident in _OLDER_WORD_IDENTS or (ident == _WORD_IDENT and nfib < _WORD97_NFIB):
        from parsers.convert import INSTALL_HINT

        detail = f"a Word 6/95 or older document (wIdent {ident:#06x}, nFib {nfib}): {INSTALL_HINT}"
        raise CannotRead(Unreadable("unsupported-format", filename, detail))
    if ident != _WORD_IDENT:
        raise _Broken(f"the WordDocument stream does not start with a Word FIB (wIdent {ident:#06x})")
    if flags & _FIB_ENCRYPTED:  # fObfuscated only says how (XOR or RC4), and means nothing without it
        how = "XOR-obfuscated" if flags & _FIB_OBFUSCATED else "encrypted"
        raise CannotRead(Unreadable("encrypted", filename, f"the Word document is password-protected ({how})"))


class _WordDocument:
    """The text and paragraph properties of one WordDocument stream."""

    def __init__(self, container: _Container, filename: str, limits: Limits) -> None:
        self.filename = filename
        self.limits = limits
        if not container.ole.exists("WordDocument"):
            if not container.ole.listdir():
                raise _Broken("the compound file holds no streams")
            detail = "a compound file without a WordDocument stream: not a Word document (a Works file, a spreadsheet?)"
            raise CannotRead(Unreadable("unsupported-format", filename, detail))
        self.stream = _read_stream(container, "WordDocument")
        fib = self.stream
        if len(fib) < 154:
            raise _Broken("the FIB is cut off")
        _check_fib_base(fib, filename)
        (flags,) = struct.unpack_from("<H", fib, 10)
        table_name = "1Table" if flags & _FIB_WHICH_TABLE else "0Table"
        self.table = _read_stream(container, table_name)
        self.data = _read_stream(container, "Data") if container.ole.exists("Data") else b""
        self._read_fib(fib)
        self.pieces = self._read_pieces()
        self.paragraph_runs = self._read_fkp_runs(_PLCF_BTE_PAPX, paragraphs=True)
        self.paragraph_properties_known = bool(self.paragraph_runs)
        self.character_runs = self._read_fkp_runs(_PLCF_BTE_CHPX, paragraphs=False)
        self.deleted = self._deleted_ranges()

    # --- the FIB ([MS-DOC] 2.5.1) ---------------------------------------------------------------

    def _read_fib(self, fib: bytes) -> None:
        """Find FibRgLw97 and FibRgFcLcb97 by the counts that precede them (csw, cslw, cbRgFcLcb)."""
        offset = 32
        (csw,) = struct.unpack_from("<H", fib, offset)
        offset += 2 + 2 * csw
        (cslw,) = struct.unpack_from("<H", fib, offset)
        lw_start = offset + 2
        if cslw < 11:
            raise _Broken(f"FibRgLw holds {cslw} values, fewer than Word 97's")
        lw = struct.unpack_from("<11i", fib, lw_start)
        # FibRgLw97: cbMac, reserved1, reserved2, ccpText, ccpFtn, ccpHdd, reserved3, ccpAtn, ccpEdn, ccpTxbx, ...
        self.ccp_text, ccp_ftn, ccp_hdd, _, ccp_atn, ccp_edn, self.ccp_txbx = lw[3:10]
        if min(self.ccp_text, ccp_ftn, ccp_hdd, ccp_atn, ccp_edn, self.ccp_txbx) < 0:
            raise _Broken("negative character counts in the FIB")
        self.text_box_start = self.ccp_text + ccp_ftn + ccp_hdd + ccp_atn + ccp_edn
        offset = lw_start + 4 * cslw
        (count,) = struct.unpack_from("<H", fib, offset)
        self.fc_lcb_start = offset + 2
        self.fc_lcb_count = count
        if count <= _CLX:
            raise _Broken(f"FibRgFcLcb holds {count} pairs, fewer than Word 97's")

    def _fc_lcb(self, index: int) -> tuple[int, int]:
        fc, lcb = struct.unpack_from("<II", self.stream, self.fc_lcb_start + 8 * index)
        return int(fc), int(lcb)

    def _table_slice(self, index: int) -> bytes:
        fc, lcb = self._fc_lcb(index)
        if lcb == 0:
            return b""
        if fc + lcb > len(self.table):
            raise _Broken(f"FibRgFcLcb97 entry {index} points past the table stream")
        return self.table[fc : fc + lcb]

    # --- the piece table ([MS-DOC] 2.9.38 Clx) -----------------------------------------------------

    def _read_pieces(self) -> list[_Piece]:
        clx = self._table_slice(_CLX)
        offset = 0
        while offset < len(clx) and clx[offset] == 0x01:  # Prc: clxt 1, cbGrpprl, GrpPrl (skipped)
            (size,) = struct.unpack_from("<h", clx, offset + 1)
            if size < 0:
                raise _Broken("a Prc of negative size")
            offset += 3 + size
        if offset >= len(clx) or clx[offset] != 0x02:  # Pcdt: clxt 2, lcb, PlcPcd
            raise _Broken("no piece table (Pcdt) in the Clx")
        (size,) = struct.unpack_from("<I", clx, offset + 1)
        plc = clx[offset + 5 : offset + 5 + size]
        if len(plc) != size or size < 4 or (size - 4) % 12:
            raise _Broken("the piece table (PlcPcd) is cut off")
        count = (size - 4) // 12
        if count > self.limits.doc_max_pieces:
            raise CannotRead(
                Unreadable("too-large", self.filename, f"{count} text pieces (limit {self.limits.doc_max_pieces})")
            )
        positions = struct.unpack_from(f"<{count + 1}I", plc, 0)
        pieces = []
        for number in range(count):
            (fc_compressed,) = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * number + 2)  # Pcd.fc
            compressed = bool(fc_compressed & 0x40000000)
            fc = fc_compressed & 0x3FFFFFFF
            piece = _Piece(positions[number], positions[number + 1], fc // 2 if compressed else fc, compressed)
            if piece.cp_end < piece.cp_start:
                raise _Broken("the piece table's positions go backwards")
            if piece.offset + (piece.cp_end - piece.cp_start) * piece.width > len(self.stream):
                raise _Broken("a text piece lies past the end of the WordDocument stream")
            pieces.append(piece)
        return pieces

    def _segments(self, cp_start: int, cp_end: int) -> list[tuple[str, int, int]]:
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

    # --- paragraph and character properties ([MS-DOC] 2.8.6, 2.9.175, 2.8.5, 2.9.33) --------------

    def _read_fkp_runs(self, index: int, *, paragraphs: bool) -> list[tuple[int, int, bytes]]:
        """(first byte, end byte, grpprl) for every run of the FKPs a PlcBte points to, sorted."""
        plc = self._table_slice(index)
        if len(plc) < 4:
            return []
        if (len(plc) - 4) % 8:
            raise _Broken("a PlcBte of the wrong size")
        count = (len(plc) - 4) // 8
        pages = struct.unpack_from(f"<{count}I", plc, 4 * (count + 1))
        distinct = dict.fromkeys(page & 0x3FFFFF for page in pages)  # PnFkpPapx/PnFkpChpx: 22 bits
        if len(distinct) > _MAX_FKP_PAGES:
            detail = f"{len(distinct)} pages of formatting (limit {_MAX_FKP_PAGES})"
            raise CannotRead(Unreadable("too-large", self.filename, detail))
        runs: list[tuple[int, int, bytes]] = []
        for pn in distinct:
            page_start = pn * _PAGE
            page = self.stream[page_start : page_start + _PAGE]
            if len(page) != _PAGE:
                raise _Broken("an FKP page lies past the end of the WordDocument stream")
            runs.extend(self._fkp_page_runs(page, paragraphs=paragraphs))
        runs.sort(key=lambda run: run[0])
        return runs

    def _fkp_page_runs(self, page: bytes, *, paragraphs: bool) -> list[tuple[int, int, bytes]]:
        crun = page[_PAGE - 1]
        entry = 13 if paragraphs else 1  # BxPap (bOffset + PHE) or the one-byte Chpx offset
        if 4 * (crun + 1) + entry * crun > _PAGE - 1:
            raise _Broken(f"an FKP claims {crun} runs")
        bounds = struct.unpack_from(f"<{crun + 1}I", page, 0)
        runs = []
        for number in range(crun):
            word_offset = page[4 * (crun + 1) + entry * number]
            grpprl = b""
            if word_offset:
                at = 2 * word_offset
                grpprl = self._papx_in_fkp(page, at) if paragraphs else page[at + 1 : at + 1 + page[at]]
            runs.append((bounds[number], bounds[number + 1], grpprl))
        return runs

    def _papx_in_fkp(self, page: bytes, at: int) -> bytes:
        """[MS-DOC] 2.9.174 PapxInFkp: the grpprl after the istd, or the one sprmPHugePapx points to."""
        size = page[at]
        start = at + 1
        if size == 0:
            size, start = page[at + 1], at + 2
            length = 2 * size
        else:
            length = 2 * size - 1
        grpprl_and_istd = page[start : start + length]
        grpprl = grpprl_and_istd[2:]
        for sprm, operand in _sprms(grpprl):
            if sprm == _SPRM_P_HUGE_PAPX and len(operand) == 4:
                # [MS-DOC] 2.9.181 PrcData in the Data stream: cbGrpprl then the real grpprl
                (position,) = struct.unpack("<I", operand)
                if position + 2 > len(self.data):
                    raise _Broken("sprmPHugePapx points past the Data stream")
                (huge_size,) = struct.unpack_from("<H", self.data, position)
                return bytes(self.data[position + 2 : position + 2 + huge_size])
        return bytes(grpprl)

    def _deleted_ranges(self) -> list[tuple[int, int]]:
        """Byte ranges of text marked deleted (sprmCFRMarkDel) by tracked changes."""
        ranges = []
        for start, end, grpprl in self.character_runs:
            for sprm, operand in _sprms(grpprl):
                # a ToggleOperand: 0x01 on, or 0x81 the opposite of the style's (which is never deleted)
                if sprm == _SPRM_C_RMARK_DEL and operand[:1] in (b"\x01", b"\x81"):
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
        for sprm, operand in _sprms(self.character_runs[at][2]):
            if sprm != _SPRM_C_PIC_LOCATION or len(operand) != 4:
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

    def properties_at(self, starts: list[int], offset: int) -> _ParagraphProperties:
        at = bisect.bisect_right(starts, offset) - 1
        if at < 0 or not self.paragraph_runs[at][0] <= offset < self.paragraph_runs[at][1]:
            return _PLAIN
        return _paragraph_properties(self.paragraph_runs[at][2])

    # --- the text ----------------------------------------------------------------------------------

    def paragraphs(self) -> list[_Paragraph]:
        """The main document's paragraphs, fields shown as their results, deletions left out."""
        return self._paragraphs(0, self.ccp_text)

    def text_box_paragraphs(self) -> list[_Paragraph]:
        if self.ccp_txbx == 0:
            return []
        return self._paragraphs(self.text_box_start, self.text_box_start + self.ccp_txbx)

    def _paragraphs(self, cp_start: int, cp_end: int) -> list[_Paragraph]:
        walk = _TextWalk(self)
        for text, first, width in self._segments(cp_start, cp_end):
            offset_of = _offsets(text, first, width)
            done = 0
            for control in _CONTROL.finditer(text):  # text between controls is taken a run at a time
                index = control.start()
                if index > done:
                    walk.visible(text[done:index], done, offset_of)
                walk.control(text[index], offset_of(index))
                done = index + 1
            if done < len(text):
                walk.visible(text[done:], done, offset_of)
        return walk.finish()


_CONTROL = re.compile("[\x00-\x1f]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _offsets(text: str, first: int, width: int) -> Callable[[int], int]:
    """The byte offset of each character of a piece; one beyond the BMP took two UTF-16 units."""
    if width == 1 or not _ASTRAL.search(text):
        return lambda index: first + index * width
    offsets = list(itertools.accumulate((4 if char >= "\U00010000" else 2 for char in text), initial=first))
    return offsets.__getitem__


class _TextWalk:
    """Characters to paragraphs: fields shown as their results, deleted text left out."""

    def __init__(self, document: _WordDocument) -> None:
        self.document = document
        self.paragraph_starts = [run[0] for run in document.paragraph_runs]
        self.character_starts = [run[0] for run in document.character_runs]
        self.deleted_starts = [start for start, _ in document.deleted]
        self.fields: list[_Field] = []  # the fields open here, outermost first
        self.showing = True  # no open field is in its instruction
        self.parts: list[str] = []
        self.found: list[_Paragraph] = []

    def visible(self, run: str, index: int, offset_of: Callable[[int], int]) -> None:
        """Ordinary characters: text, or part of a field's instruction."""
        if self.document.deleted:
            run = "".join(
                char
                for position, char in enumerate(run, start=index)
                if not self.document.is_deleted(self.deleted_starts, offset_of(position))
            )
        if self.showing:
            self.parts.append(run)
        elif not self.fields[-1].in_result:
            innermost = self.fields[-1]
            innermost.instruction = (innermost.instruction + run)[:64]

    def control(self, char: str, offset: int) -> None:
        if char in _PARAGRAPH_ENDS:
            properties = _PLAIN
            if char != _SECTION_MARK:
                properties = self.document.properties_at(self.paragraph_starts, offset)
            self.found.append(_Paragraph("".join(self.parts), char, properties))
            self.parts = []
            return
        if self.document.deleted and self.document.is_deleted(self.deleted_starts, offset):
            return
        if char == _FIELD_BEGIN:
            if len(self.fields) < _MAX_DEPTH * 4:
                self.fields.append(_Field())
        elif char == _FIELD_SEPARATOR:
            if self.fields:
                self.fields[-1].in_result = True
        elif char == _FIELD_END:
            if self.fields:
                ended = self.fields.pop()
                self.showing = all(field.in_result for field in self.fields)
                if ended.checked is not None and self.showing:
                    self.parts.append(_CHECKED if ended.checked else _UNCHECKED)
            return
        elif self.showing:
            kept = _KEPT_CONTROLS.get(char)
            if kept is not None:
                self.parts.append(kept)
            return  # 0x01/0x08 objects, 0x02 footnote marks, 0x1F optional hyphens …
        elif char == _PICTURE and not self.fields[-1].in_result:
            innermost = self.fields[-1]
            if innermost.instruction.strip().startswith("FORMCHECKBOX"):
                innermost.checked = self.document.checkbox_at(self.character_starts, offset)
            return
        else:
            return
        self.showing = all(field.in_result for field in self.fields)

    def finish(self) -> list[_Paragraph]:
        if any(part.strip() for part in self.parts):
            self.found.append(_Paragraph("".join(self.parts), _PARAGRAPH_END, _PLAIN))
        return self.found


def _sprms(grpprl: bytes) -> list[tuple[int, bytes]]:
    """[MS-DOC] 2.2.5 Sprm: each sprm of a grpprl with its operand; a cut-off last one is dropped."""
    found = []
    offset = 0
    while offset + 2 <= len(grpprl):
        (sprm,) = struct.unpack_from("<H", grpprl, offset)
        offset += 2
        spra = sprm >> 13
        if spra != 6:
            size = _OPERAND_SIZE[spra]
        elif sprm in (_SPRM_T_DEF_TABLE, _SPRM_T_DEF_TABLE10):
            if offset + 2 > len(grpprl):
                break
            (cb,) = struct.unpack_from("<H", grpprl, offset)  # TDefTableOperand.cb: the rest's size + 1
            offset += 2
            size = max(cb - 1, 0)
        elif sprm == _SPRM_P_CHG_TABS and offset < len(grpprl) and grpprl[offset] == 255:
            size = _chg_tabs_size(grpprl, offset)
        else:
            if offset >= len(grpprl):
                break
            size = grpprl[offset]
            offset += 1
        if offset + size > len(grpprl):
            break
        found.append((sprm, grpprl[offset : offset + size]))
        offset += size
    return found


def _chg_tabs_size(grpprl: bytes, offset: int) -> int:
    """[MS-DOC] 2.6.2 sprmPChgTabs with cb 255: the size follows from the two tab lists."""
    deleted_at = offset + 1
    if deleted_at >= len(grpprl):
        return len(grpprl)
    deleted = grpprl[deleted_at]
    added_at = deleted_at + 1 + 4 * deleted
    if added_at >= len(grpprl):
        return len(grpprl)
    return 1 + (1 + 4 * deleted) + (1 + 3 * grpprl[added_at])


@functools.lru_cache(maxsize=1024)  # a form's paragraphs share a handful of property sets
def _paragraph_properties(grpprl: bytes) -> _ParagraphProperties:
    in_table = row_end = inner_cell = inner_row = False
    depth = 0
    cells: tuple[_CellEdges, ...] = ()
    vertical: dict[int, int] = {}
    for sprm, operand in _sprms(grpprl):
        if sprm == _SPRM_P_IN_TABLE:
            in_table = operand[:1] == b"\x01"
        elif sprm == _SPRM_P_TTP:
            row_end = operand[:1] == b"\x01"
        elif sprm == _SPRM_P_INNER_TABLE_CELL:
            inner_cell = operand[:1] == b"\x01"
        elif sprm == _SPRM_P_INNER_TTP:
            inner_row = operand[:1] == b"\x01"
        elif sprm == _SPRM_P_ITAP and len(operand) == 4:
            depth = struct.unpack("<i", operand)[0]
        elif sprm == _SPRM_P_DTAP and len(operand) == 4:
            depth += struct.unpack("<i", operand)[0]
        elif sprm == _SPRM_T_DEF_TABLE:
            cells = _cell_edges(operand)
        elif sprm == _SPRM_T_VERT_MERGE and len(operand) >= 2:
            vertical[operand[0]] = operand[1]  # itc, VerticalMergeFlag
    if vertical and cells:
        cells = tuple(
            _CellEdges(cell.left, cell.right, cell.merged_into_previous, vertical.get(itc, -1) == 1 or cell.continued)
            for itc, cell in enumerate(cells)
        )
    if in_table and depth <= 0:
        depth = 1
    return _ParagraphProperties(
        in_table=in_table or depth > 0,
        depth=min(max(depth, 0), _MAX_DEPTH),
        row_end=row_end,
        inner_cell_end=inner_cell,
        inner_row_end=inner_row,
        cells=cells,
    )


def _cell_edges(operand: bytes) -> tuple[_CellEdges, ...]:
    """[MS-DOC] 2.9.317 TDefTableOperand: NumberOfColumns, rgdxaCenter, then a TC80 per cell."""
    if not operand:
        return ()
    count = operand[0]
    if count == 0 or count > _MAX_CELLS or len(operand) < 1 + 2 * (count + 1):
        return ()
    edges = struct.unpack_from(f"<{count + 1}h", operand, 1)
    descriptors = 1 + 2 * (count + 1)
    cells = []
    for itc in range(count):
        flags = 0
        at = descriptors + 20 * itc  # TC80: tcgrf, wWidth, four Brc80MayBeNil
        if at + 2 <= len(operand):
            (flags,) = struct.unpack_from("<H", operand, at)
        horizontal, vertical = flags & 0x3, (flags >> 5) & 0x3  # TCGRF.horzMerge, TCGRF.vertMerge
        cells.append(_CellEdges(edges[itc], edges[itc + 1], horizontal >= 2, vertical == 1))
    return tuple(cells)


def _grid_rows(rows: list[tuple[list[str], tuple[_CellEdges, ...]]]) -> tuple[tuple[Cell, ...], ...]:
    """Cells placed on the columns the table's cell edges make, as Word's grid does.

    A row whose cell count differs from its sprmTDefTable (or that has none) is placed one column
    per cell: what the text shows.
    """
    boundaries = sorted({edge for _, edges in rows for cell in edges for edge in (cell.left, cell.right)})
    column_of = {edge: column for column, edge in enumerate(boundaries)}
    grid_rows = []
    for texts, edges in rows:
        if len(edges) != len(texts) or any(cell.right <= cell.left for cell in edges):
            grid_rows.append(tuple(Cell(text, column) for column, text in enumerate(texts)))
            continue
        cells: list[Cell] = []
        for text, cell in zip(texts, edges, strict=True):
            column, span = column_of[cell.left], column_of[cell.right] - column_of[cell.left]
            if cell.merged_into_previous and cells:
                previous = cells[-1]
                joined = "\n".join(part for part in (previous.text, text) if part)
                cells[-1] = Cell(joined, previous.column, column + span - previous.column, previous.continued)
                continue
            cells.append(Cell(text, column, max(span, 1), cell.continued))
        grid_rows.append(tuple(cells))
    return tuple(grid_rows)


class _BlockBuilder:
    """Paragraphs to lines and grids: tables opened, filled and closed by the paragraphs' depths."""

    def __init__(self, filename: str, *, tables_known: bool) -> None:
        self.filename = filename
        self.tables_known = tables_known
        self.blocks: list[Block] = []
        self.open: list[_Table] = []  # open tables, outermost first
        self.tables = 0
        self.paragraphs = 0
        self.previous_mark = ""

    def add(self, paragraph: _Paragraph) -> None:
        self.paragraphs += 1
        properties = paragraph.properties if self.tables_known else self._guessed(paragraph)
        depth = properties.depth if properties.in_table else 0
        while len(self.open) > depth:
            self._close_innermost()
        while len(self.open) < depth:
            self.tables += 1
            self.open.append(_Table(self.tables))
        self.previous_mark = paragraph.mark
        if depth == 0:
            if paragraph.text.strip():
                self.blocks.append(Line(paragraph.text, Location(self.filename, paragraph=self.paragraphs)))
            return
        table = self.open[-1]
        row_end = properties.row_end if depth == 1 else properties.inner_row_end
        if row_end:
            table.end_row(properties.cells)
            return
        if paragraph.text.strip():
            table.lines.append(paragraph.text)
        if paragraph.mark == _CELL_MARK or (depth > 1 and properties.inner_cell_end):
            table.end_cell()

    def _guessed(self, paragraph: _Paragraph) -> _ParagraphProperties:
        """Without paragraph properties: a cell mark right after a cell mark, alone, ends the row."""
        in_row = bool(self.open) and (bool(self.open[0].cells) or bool(self.open[0].lines))
        if paragraph.mark == _CELL_MARK:
            ends_row = self.previous_mark == _CELL_MARK and not paragraph.text.strip()
            return _ParagraphProperties(in_table=True, depth=1, row_end=ends_row)
        if in_row:
            return _ParagraphProperties(in_table=True, depth=1)
        return _PLAIN

    def _close_innermost(self) -> None:
        table = self.open.pop()
        finished = [table.grid(self.filename), *table.nested]
        if self.open:
            self.open[-1].nested.extend(finished)
        else:
            self.blocks.extend(finished)

    def finish(self) -> None:
        while self.open:
            self._close_innermost()
