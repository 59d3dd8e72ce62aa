"""[MS-DOC] 2.2.5 Sprm and the properties read from them: 2.6.2 paragraph, 2.6.3 table, 2.6.1 character.

A paragraph mark's sprms say whether it is in a table (sprmPFInTable, at depth sprmPItap), whether
it ends a row (sprmPFTtp; deeper, sprmPFInnerTableCell and sprmPFInnerTtp), and at a row end where
the cells' edges are (sprmTDefTable: 2.9.317 TDefTableOperand, 2.9.319 TC80, 2.9.311 TCGRF) and
which are merged vertically (sprmTVertMerge) — [MS-DOC] 2.4.3 "Overview of Tables" and 2.4.4
"Determining Cell Boundaries".
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

# Sprms ([MS-DOC] 2.6.2 paragraph, 2.6.3 table, 2.6.1 character properties).
_SPRM_P_IN_TABLE = 0x2416
_SPRM_P_TTP = 0x2417
_SPRM_P_ITAP = 0x6649
_SPRM_P_DTAP = 0x664A
_SPRM_P_INNER_TABLE_CELL = 0x244B
_SPRM_P_INNER_TTP = 0x244C
SPRM_P_HUGE_PAPX = 0x6646
_SPRM_P_CHG_TABS = 0xC615
_SPRM_T_DEF_TABLE = 0xD608
_SPRM_T_DEF_TABLE10 = 0xD606
_SPRM_T_VERT_MERGE = 0xD62B
SPRM_C_RMARK_DEL = 0x0800
SPRM_C_PIC_LOCATION = 0x6A03
_OPERAND_SIZE = {0: 1, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2, 7: 3}  # by spra; 6 is variable
_MAX_CELLS = 64  # TDefTableOperand.NumberOfColumns is at most 63
MAX_DEPTH = 16  # nested tables


@dataclass(frozen=True)
class CellEdges:
    """One cell of a row as sprmTDefTable describes it."""

    left: int
    right: int
    merged_into_previous: bool  # TCGRF.horzMerge: a legacy horizontal merge
    continued: bool  # TCGRF.vertMerge / sprmTVertMerge: the lower part of a vertical merge


@dataclass(frozen=True)
class ParagraphProperties:
    in_table: bool = False
    depth: int = 0  # sprmPItap, 1 for an ordinary table
    row_end: bool = False  # sprmPFTtp
    inner_cell_end: bool = False  # sprmPFInnerTableCell
    inner_row_end: bool = False  # sprmPFInnerTtp
    cells: tuple[CellEdges, ...] = ()  # a row end's sprmTDefTable


PLAIN = ParagraphProperties()


def sprms(grpprl: bytes) -> list[tuple[int, bytes]]:
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
def paragraph_properties(grpprl: bytes) -> ParagraphProperties:
    in_table = row_end = inner_cell = inner_row = False
    depth = 0
    cells: tuple[CellEdges, ...] = ()
    vertical: dict[int, int] = {}
    for sprm, operand in sprms(grpprl):
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
            CellEdges(cell.left, cell.right, cell.merged_into_previous, vertical.get(itc, -1) == 1 or cell.continued)
            for itc, cell in enumerate(cells)
        )
    if in_table and depth <= 0:
        depth = 1
    return ParagraphProperties(
        in_table=in_table or depth > 0,
        depth=min(max(depth, 0), MAX_DEPTH),
        row_end=row_end,
        inner_cell_end=inner_cell,
        inner_row_end=inner_row,
        cells=cells,
    )


def _cell_edges(operand: bytes) -> tuple[CellEdges, ...]:
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
        cells.append(CellEdges(edges[itc], edges[itc + 1], horizontal >= 2, vertical == 1))
    return tuple(cells)
