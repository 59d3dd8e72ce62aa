"""A blank form's labels, found without knowing the call: what ``mailbot call new`` builds a call from.

A blank form shows where applicants write by leaving room: a label cell beside an empty cell
(or above one), "标签：______" in a line, a content control's placeholder. parsers.label_matching
then matches those labels to the field kinds the readers know (name, institution, email, topic,
budget …) by their Chinese and English synonyms; the others stay text fields. A table whose header
row sits over several empty rows (team members, a budget breakdown) is a list, not a field, and is
reported as one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from parsers.convert import convert, office_binary
from parsers.docx_reader import read_docx
from parsers.fields import _NOTES_HEADING
from parsers.known_fields import discovery_spec
from parsers.layout import Block, Cell, Grid
from parsers.limits import Limits
from parsers.model import Location
from parsers.pdf_reader import read_pdf
from parsers.sniff import sniff
from parsers.spec import FormSpec
from parsers.textnorm import clean_value, label_key, strip_hints
from parsers.word97.document import read_doc

Layout = Literal["right", "below", "inline", "in-cell"]

_SECTION = re.compile(
    r"^\s*(?:[一二三四五六七八九十]+[、.．]|[（(][一二三四五六七八九十\d]+[)）]|\d+[、.．](?!\d)|"
    r"第[一二三四五六七八九十\d]+|section\s+\d|part\s+[\divx]+)",
    re.I,
)
_NOT_FIELD = re.compile(
    r"签字|签名|盖章|公章|签章|signature|signed|^sign\b|^日期$|^date$|^年月日$|^序号$|^no\.?$|^#$", re.I
)
_PLACEHOLDER = re.compile(
    r"单击或点击此处输入文字|单击此处输入文字|点击此处输入|请输入|请填写|请选择|click or tap here to enter text|"
    r"click here to enter text|choose an item|enter text here|type here",
    re.I,
)
_FILL_MARKS = re.compile(r"[_＿…\.。\s\u3000·—\-]+")
_DATE_SKELETON = re.compile(r"^[\s年月日/\-.]*$")
_BOXES = "☐□○◯☑☒■√✓✔●◉▣"
_TITLE_WORDS = re.compile(r"申报书|申请书|申报表|申请表|推荐表|建议书|模板|application|proposal|form", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_MAX_LABEL_CHARS = 40
_MAX_TITLE_CHARS = 80
UNIT = re.compile(r"[(（][^)）]*[)）]")  # a unit or a hint in brackets: "(万元)"
_LIST_ROWS = 2  # empty rows under a header row that make a list (team members …), not one value each


@dataclass(frozen=True)
class FoundLabel:
    text: str  # as printed, lines joined by a space, hints such as "（必填）" kept
    layout: Layout
    where: Location
    options: tuple[str, ...] = ()  # the words beside tick boxes in its value cell ("男", "女")
    column: str = ""  # the header over its value cell, in a table of items ("金额(万元) Amount")


@dataclass(frozen=True)
class ListTable:
    """A table of several entries (team members …): its column labels and how many empty rows it has."""

    caption: str
    columns: tuple[str, ...]
    rows: int
    where: Location


@dataclass(frozen=True)
class BlankForm:
    title: str
    labels: tuple[FoundLabel, ...]
    lists: tuple[ListTable, ...]
    kind: str
    emails: tuple[str, ...] = ()  # addresses the form mentions (its notes often say where to send it)


def read_blank_form(data: bytes, filename: str, limits: Limits | None = None) -> BlankForm:
    """The labels of a blank form (.docx, .pdf, .doc and the other Word formats); raises CannotRead."""
    limits = limits or Limits()
    blocks = document_blocks(data, filename, limits)
    labels, lists = find_labels(blocks)
    text = "\n".join(block.text() if isinstance(block, Grid) else block.text for block in blocks)
    emails = tuple(dict.fromkeys(match.lower() for match in _EMAIL.findall(unicodedata.normalize("NFKC", text))))
    return BlankForm(form_title(blocks), tuple(labels), tuple(lists), sniff(data, filename, ""), emails)


def document_blocks(data: bytes, filename: str, limits: Limits, spec: FormSpec | None = None) -> list[Block]:
    """Any Word or PDF document as lines and grids; a PDF's form pages are those naming ``spec``'s labels
    (by default every label mailbot knows). Raises CannotRead."""
    kind = sniff(data, filename, "")
    if kind == "pdf":
        return read_pdf(data, filename, spec or discovery_spec(), limits).blocks
    if kind in ("doc", "wps"):
        if limits.legacy_word != "native" and office_binary() is not None:
            return read_docx(convert(data, kind, "docx", filename, limits.convert_timeout_s), filename, limits).blocks
        return read_doc(data, filename, limits).blocks
    if kind in ("rtf", "odt"):
        return read_docx(convert(data, kind, "docx", filename, limits.convert_timeout_s), filename, limits).blocks
    return read_docx(data, filename, limits).blocks


def form_title(blocks: list[Block]) -> str:
    """The form's heading: the first short line naming an application form, else the first short line."""
    lines = []
    for block in blocks:
        if isinstance(block, Grid):
            break
        text = clean_value(block.text)
        if text and len(text) <= _MAX_TITLE_CHARS and not _slots(block.text):
            lines.append(text)
    for line in lines:
        if _TITLE_WORDS.search(line):
            return line
    return lines[0] if lines else ""


def is_blank(text: str) -> bool:
    """Room left for a value: nothing, underlines, a content control's placeholder, "年 月 日"."""
    text = _PLACEHOLDER.sub("", unicodedata.normalize("NFKC", text))
    text = _FILL_MARKS.sub("", text)
    return not text or bool(_DATE_SKELETON.match(text))


def choices(text: str) -> tuple[str, ...]:
    """The options of a tick-box cell ("☐男 ☐女" → 男, 女), or () when it is not one."""
    if not any(box in text for box in _BOXES):
        return ()
    words = [word for word in re.split(rf"[\s{_BOXES}/、,，]+", text) if word]
    return tuple(words) if words and all(len(word) <= 12 for word in words) else ()


def _label_like(text: str) -> bool:
    bare = strip_hints(" ".join(text.split()))
    if not bare or len(bare) > _MAX_LABEL_CHARS or is_blank(bare) or choices(text):
        return False
    if bare.endswith(("。", ".")) and len(bare.split()) > 3:
        return False  # a sentence of instructions
    if _SECTION.match(bare) or _NOT_FIELD.search(bare) or bare.isdigit() or UNIT.fullmatch(bare):
        return False  # a heading, a signature line, a row number, a hint in brackets
    return any(char.isalpha() for char in bare)


def _label_text(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def find_labels(blocks: list[Block]) -> tuple[list[FoundLabel], list[ListTable]]:
    labels: list[FoundLabel] = []
    lists: list[ListTable] = []
    in_notes = False
    for block in blocks:
        if isinstance(block, Grid):
            in_notes = False
            _grid_labels(block, labels, lists)
            continue
        if _NOTES_HEADING.match(block.text):
            in_notes = True
        if not in_notes:
            labels.extend(FoundLabel(text, "inline", block.where) for text in _slots(block.text))
    unique: dict[str, FoundLabel] = {}
    for found in labels:  # a PDF gives a table's text twice: as lines and as cells
        unique.setdefault(label_key(found.text), found)
    return list(unique.values()), lists


def _slots(line: str) -> list[str]:
    """The labels of "标签：____  标签2：____" when every value in the line is blank."""
    parts = re.split(r"[:：]", line)
    if len(parts) < 2:
        return []
    found = []
    label = parts[0].strip()
    for number, part in enumerate(parts[1:], start=1):
        if not _label_like(label):
            return []
        found.append(label)
        rest = part.strip()
        if number == len(parts) - 1:
            if not is_blank(rest):
                return []
            break
        # the value (underlines, spaces) then the next label
        piece = re.split(r"[_＿]{2,}|\t|\s{2,}|\u3000", rest)
        if len(piece) < 2 and rest:
            return []  # a value written in: not a blank slot (or a sentence with a colon)
        label = piece[-1].strip() if piece else ""
        if not all(is_blank(value) for value in piece[:-1]):
            return []
    return found


def _is_value_cell(cell: Cell) -> bool:
    return is_blank(cell.text) or bool(choices(cell.text))


def _grid_labels(grid: Grid, labels: list[FoundLabel], lists: list[ListTable]) -> None:
    rows = grid.rows
    list_rows: set[int] = set()
    for number, row in enumerate(rows):
        cells = [cell for cell in row if not cell.continued]
        if len(cells) < 2 or not all(_label_like(cell.text) for cell in cells):
            continue
        empty = 0
        for below in rows[number + 1 :]:
            if not all(is_blank(cell.text) for cell in below if not cell.continued):
                break
            empty += 1
        if empty >= _LIST_ROWS:
            caption = ""
            if number and len([c for c in rows[number - 1] if not c.continued]) == 1:
                caption = _label_text(rows[number - 1][0].text)
                list_rows.add(number - 1)
            where = Location(grid.where.file, grid.where.page, grid.where.table, number + 1)
            lists.append(ListTable(caption, tuple(_label_text(c.text) for c in cells), empty, where))
            list_rows.update(range(number, number + 1 + empty))
    for number, row in enumerate(rows):
        if number in list_rows:
            continue
        where = Location(grid.where.file, grid.where.page, grid.where.table, number + 1)
        for position, cell in enumerate(row):
            if cell.continued:
                continue
            found = _cell_label(grid, number, position, cell, where)
            if found is not None:
                labels.append(found)


def _cell_label(grid: Grid, number: int, position: int, cell: Cell, where: Location) -> FoundLabel | None:
    text = cell.text
    if not _label_like(text):
        slots = _slots(text) if "\n" not in text.strip() else []
        return FoundLabel(slots[0], "inline", where) if len(slots) == 1 else None
    right = next((other for other in grid.rows[number][position + 1 :] if not other.continued), None)
    if right is not None and _is_value_cell(right):
        header = _column_header(grid, number, right)
        return FoundLabel(_label_text(text), "right", where, choices(right.text), header)
    if right is not None and not _label_like(right.text):
        return None  # beside text that is neither a label nor room for a value: part of the printed form
    below = _below(grid, number, cell)
    below_row = grid.rows[number + 1] if below is not None else ()
    # under a header of a table whose rows start with labels (a budget by item), not a value of its own
    if below is not None and _is_value_cell(below) and not any(_label_like(c.text) for c in below_row):
        return FoundLabel(_label_text(text), "below", where, choices(below.text))
    if right is None and len([c for c in grid.rows[number] if not c.continued]) == 1 and below is None:
        return FoundLabel(_label_text(text), "in-cell", where)  # typed into under the label
    return None


def _column_header(grid: Grid, number: int, value: Cell) -> str:
    """The first row's text over ``value``, when that row is a header of labels (not a label and its value)."""
    if number == 0:
        return ""
    first = [cell for cell in grid.rows[0] if not cell.continued]
    if len(first) < 2 or not all(_label_like(cell.text) for cell in first):
        return ""
    return next((_label_text(cell.text) for cell in first if cell.covers(value.column)), "")


def _below(grid: Grid, number: int, label: Cell) -> Cell | None:
    if number + 1 >= len(grid.rows):
        return None
    for cell in grid.rows[number + 1]:
        if cell.covers(label.column) and not cell.continued:
            return cell
    return None
