"""How a sheet of an exported workbook is written: the coordinators' headings over the English keys,
frozen, filtered and sized to its contents, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
# what makes a spreadsheet read a cell as a formula (or a DDE command)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _display_width(text: str) -> int:
    """Columns a text takes on screen: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def write_sheet(
    workbook: Workbook, title: str, rows: Iterable[dict[str, Any]], headings: dict[str, str], first: bool = False
) -> None:
    """A sheet with the coordinators' headings, the English keys below them, frozen, filtered and sized."""
    sheet = workbook.active if first else workbook.create_sheet()
    assert sheet is not None
    sheet.title = title
    rows = list(rows)
    columns = list(rows[0]) if rows else ["(empty)"]
    sheet.append([headings.get(c, c) for c in columns])
    sheet.append(columns)
    for header_row in (sheet[1], sheet[2]):
        for cell in header_row:
            cell.font = Font(bold=True)
            cell.alignment = Alignment(wrap_text=False, vertical="top")
    for row in rows:
        sheet.append([cell_value(row.get(c)) for c in columns])
    for row_cells in sheet.iter_rows(min_row=3):
        for cell in row_cells:
            if isinstance(cell.value, datetime):
                cell.number_format = DATETIME_FORMAT
    sheet.freeze_panes = "B3"
    sheet.auto_filter.ref = f"A2:{get_column_letter(len(columns))}{len(rows) + 2}"
    for index, column in enumerate(columns, start=1):
        samples = [headings.get(column, column), column] + [_shown(r.get(column)) for r in rows[:200]]
        width = max(_display_width(text) for text in samples)
        sheet.column_dimensions[get_column_letter(index)].width = min(max(10, width + 2), 60)


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return "2024-01-01 00:00:00"
    return "" if value is None else str(cell_value(value))


def cell_value(value: Any) -> Any:
    """A value as a cell holds it: wall-clock time, lists as JSON, no control character, never a formula."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)  # Excel has no zones: the wall-clock time of the heading's zone
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        # a control character stored before values were cleaned on reading must not break the workbook
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return not_a_formula(value)


def not_a_formula(value: Any) -> Any:
    """A value from a submission as a spreadsheet shows it: never a formula (a leading quote keeps it text)."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value
