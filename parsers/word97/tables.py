"""[MS-DOC] 2.4.3 "Overview of Tables", 2.4.4 "Determining Cell Boundaries": paragraphs to lines and grids.

At depth 1 a cell ends at 0x07 and a row at the 0x07 of a TTP paragraph (sprmPFTtp); deeper,
sprmPFInnerTableCell and sprmPFInnerTtp mark them. A row's cells are placed on the columns its
sprmTDefTable edges make, so merged cells span the columns their edges cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsers.layout import Block, Cell, Grid, Line
from parsers.model import Location
from parsers.word97.sprms import PLAIN, CellEdges, ParagraphProperties
from parsers.word97.text import CELL_MARK, Paragraph


@dataclass
class Table:
    number: int
    rows: list[tuple[list[str], tuple[CellEdges, ...]]] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)  # the finished cells of the current row
    lines: list[str] = field(default_factory=list)  # the paragraphs of the current cell
    nested: list[Block] = field(default_factory=list)  # grids of tables inside this one, in order

    def end_cell(self) -> None:
        self.cells.append("\n".join(self.lines))
        self.lines = []

    def end_row(self, edges: tuple[CellEdges, ...]) -> None:
        if self.lines:
            self.end_cell()
        if self.cells:
            self.rows.append((self.cells, edges))
        self.cells = []

    def grid(self, filename: str) -> Grid:
        self.end_row(())
        return Grid(grid_rows(self.rows), Location(filename, table=self.number))


def grid_rows(rows: list[tuple[list[str], tuple[CellEdges, ...]]]) -> tuple[tuple[Cell, ...], ...]:
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


class BlockBuilder:
    """Paragraphs to lines and grids: tables opened, filled and closed by the paragraphs' depths."""

    def __init__(self, filename: str, *, tables_known: bool) -> None:
        self.filename = filename
        self.tables_known = tables_known
        self.blocks: list[Block] = []
        self.open: list[Table] = []  # open tables, outermost first
        self.tables = 0
        self.paragraphs = 0
        self.previous_mark = ""

    def add(self, paragraph: Paragraph) -> None:
        self.paragraphs += 1
        properties = paragraph.properties if self.tables_known else self._guessed(paragraph)
        depth = properties.depth if properties.in_table else 0
        while len(self.open) > depth:
            self._close_innermost()
        while len(self.open) < depth:
            self.tables += 1
            self.open.append(Table(self.tables))
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
        if paragraph.mark == CELL_MARK or (depth > 1 and properties.inner_cell_end):
            table.end_cell()

    def _guessed(self, paragraph: Paragraph) -> ParagraphProperties:
        """Without paragraph properties: a cell mark right after a cell mark, alone, ends the row."""
        in_row = bool(self.open) and (bool(self.open[0].cells) or bool(self.open[0].lines))
        if paragraph.mark == CELL_MARK:
            ends_row = self.previous_mark == CELL_MARK and not paragraph.text.strip()
            return ParagraphProperties(in_table=True, depth=1, row_end=ends_row)
        if in_row:
            return ParagraphProperties(in_table=True, depth=1)
        return PLAIN

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
