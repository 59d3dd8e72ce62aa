"""The reading-order shape every document is reduced to before fields are looked for.

A Word file, a PDF page or a converted legacy document all become lines of text and grids of
cells, so that label/value pairing is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from parsers.model import Location


@dataclass(frozen=True)
class Cell:
    text: str
    column: int  # first grid column the cell covers
    span: int = 1
    continued: bool = False  # the lower part of a vertically merged cell: its text is the one above

    def covers(self, column: int) -> bool:
        return self.column <= column < self.column + self.span


@dataclass(frozen=True)
class Grid:
    rows: tuple[tuple[Cell, ...], ...]
    where: Location  # the table (and page); rows are numbered from 1 when a value is found

    def text(self) -> str:
        return "\n".join(cell.text for row in self.rows for cell in row if not cell.continued)


@dataclass(frozen=True)
class Line:
    text: str
    where: Location


Block = Grid | Line


def blocks_text(blocks: tuple[Block, ...] | list[Block]) -> str:
    return "\n".join(block.text() if isinstance(block, Grid) else block.text for block in blocks)
