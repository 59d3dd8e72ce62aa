"""PDF to lines and grids: pypdfium2 for every page's text and the tables of form pages.

pypdfium2 is fast, so it reads up to ``pdf_max_pages`` pages to find the form pages (those naming
several of the call's fields) and to judge the text layer's health: no text is a scan, text made of
replacement characters, (cid:N) runs, controls or Latin-1 mojibake is a font without a usable
Unicode map. Only the form pages are laid out into table cells, from pdfium's geometry
(parsers.pdf_grid) or, for pages it leaves alone, by pdfplumber (slow, pure Python); scanning stops
at the first page after the form that names no field.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from parsers.errors import CannotRead
from parsers.fields import label_index
from parsers.layout import Block, Cell, Grid, Line
from parsers.limits import Limits
from parsers.model import Location, Unreadable
from parsers.pdf_grid import Table, page_tables
from parsers.spec import FormSpec
from parsers.textnorm import is_cjk, join_wrapped_lines

log = logging.getLogger(__name__)

_PASSWORD_ERRORS = (4, 5)  # FPDF_ERR_PASSWORD, FPDF_ERR_SECURITY
_CID = re.compile(r"\(cid:\d+\)")
_FORM_PAGE_FIELDS = 3
_SOME_TEXT = 10  # visible characters below which a document's text layer is looked at more closely
_TEXT_OBJECT, _IMAGE_OBJECT, _OTHER_OBJECT = 1, 3, 0  # FPDF_PAGEOBJ_TEXT, FPDF_PAGEOBJ_IMAGE
_PAGES_FOR_OBJECTS = 3
_MAX_OBJECTS = 5_000


@dataclass
class PdfText:
    blocks: list[Block]
    pages: int
    form_pages: list[int] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)


def read_pdf(data: bytes, filename: str, spec: FormSpec, limits: Limits) -> PdfText:
    """The form pages' blocks (empty when no page names the call's fields); raises CannotRead."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) in _PASSWORD_ERRORS:
            raise CannotRead(Unreadable("encrypted", filename, "the PDF needs a password")) from None
        raise CannotRead(Unreadable("corrupt", filename, f"PDF cannot be opened: {exc}")) from None
    try:
        return _read_document(document, data, filename, spec, limits)
    finally:
        document.close()


def _read_document(document: Any, data: bytes, filename: str, spec: FormSpec, limits: Limits) -> PdfText:
    import pypdfium2 as pdfium

    index = label_index(spec)
    page_count = len(document)
    texts: list[str] = []
    form_pages: dict[int, tuple[Any, Any]] = {}  # page number: the pdfium page and its text page
    for number in range(min(page_count, limits.pdf_max_pages)):
        page = textpage = None
        try:
            page = document[number]
            textpage = page.get_textpage()
            text = textpage.get_text_range()
        except pdfium.PdfiumError as exc:
            log.info("%s: page %d has no readable text: %s", filename, number + 1, exc)
            text = ""
        texts.append(text)
        mentioned = index.fields_mentioned(text)
        if len(mentioned) >= _FORM_PAGE_FIELDS:
            form_pages[number] = (page, textpage)
            if len(form_pages) >= limits.pdf_max_form_pages:
                break
        elif form_pages:
            break  # the proposal body after the form
    _check_health(document, texts, filename, page_count)
    result = PdfText([], page_count, [number + 1 for number in form_pages])
    if not form_pages:
        return result
    for number in form_pages:
        result.blocks.extend(_page_lines(texts[number], filename, number + 1))
    result.blocks.extend(_tables(data, filename, form_pages, result.diagnostics))
    return result


def _check_health(document: Any, texts: list[str], filename: str, page_count: int) -> None:
    joined = "".join(texts)
    visible = [char for char in joined if not char.isspace()]
    if len(visible) < _SOME_TEXT:
        _check_without_text(document, filename, page_count, has_text=bool(visible))
        return
    bad = sum(1 for char in visible if char == "\ufffd" or _is_control(char) or 0xE000 <= ord(char) <= 0xF8FF)
    bad += sum(len(match) for match in _CID.findall(joined))
    mojibake = sum(1 for char in visible if 0x80 <= ord(char) <= 0xFF)
    cjk = sum(1 for char in visible if is_cjk(char))
    if bad > 0.15 * len(visible) or (mojibake > 0.3 * len(visible) and cjk < 0.05 * len(visible)):
        detail = f"{bad} unmapped and {mojibake} Latin-1 characters of {len(visible)}; {cjk} CJK"
        raise CannotRead(Unreadable("garbled-text", filename, detail))


def _check_without_text(document: Any, filename: str, page_count: int, has_text: bool) -> None:
    """Little or no text: pictures of pages are a scan, glyphs without Unicode are garbled."""
    counts = _object_kinds(document)
    if counts[_IMAGE_OBJECT] and not has_text:
        raise CannotRead(Unreadable("scanned", filename, f"{page_count} pages of images without a text layer"))
    if counts[_TEXT_OBJECT] and not has_text:
        raise CannotRead(Unreadable("garbled-text", filename, "text drawn with fonts that map to no characters"))
    if not has_text and not counts[_IMAGE_OBJECT] and not counts[_OTHER_OBJECT]:
        raise CannotRead(Unreadable("corrupt", filename, "no content could be read from its pages"))


def _object_kinds(document: Any) -> Counter[int]:
    """Page objects by pdfium type on the first pages (forms are followed, within a bound)."""
    counts: Counter[int] = Counter()
    for number in range(min(len(document), _PAGES_FOR_OBJECTS)):
        for seen, found in enumerate(document[number].get_objects(max_depth=4)):
            if seen >= _MAX_OBJECTS:
                break
            kind = found.type
            counts[kind if kind in (_TEXT_OBJECT, _IMAGE_OBJECT) else _OTHER_OBJECT] += 1
    return counts


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def _page_lines(text: str, filename: str, page: int) -> list[Block]:
    lines: list[Block] = []
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        if line.strip():
            lines.append(Line(line, Location(filename, page=page, paragraph=number)))
    return lines


def _tables(data: bytes, filename: str, form_pages: dict[int, tuple[Any, Any]], diagnostics: list[str]) -> list[Block]:
    tables: dict[int, list[Table]] = {}
    try:
        for number, (page, textpage) in form_pages.items():
            from_geometry = page_tables(page, textpage) if textpage is not None else None
            if from_geometry is not None:
                tables[number] = from_geometry
        unread = [number for number in form_pages if number not in tables]
        if unread:
            _plumber_tables(data, unread, tables)
    except Exception as exc:  # pdfminer raises many kinds on broken files; the page text still serves
        diagnostics.append(f"{filename}: table layout failed ({type(exc).__name__}: {exc}); read as text lines")
    grids: list[Block] = []
    for number in sorted(tables):
        for table_number, table in enumerate(tables[number], start=1):
            where = Location(filename, page=number + 1, table=table_number)
            grids.append(Grid(tuple(_row(row) for row in table), where))
    return grids


def _plumber_tables(data: bytes, numbers: list[int], tables: dict[int, list[Table]]) -> None:
    import pdfplumber

    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for number in numbers:
            if number >= len(pdf.pages):
                break
            tables[number] = pdf.pages[number].extract_tables()


def _row(cells: list[str | None]) -> tuple[Cell, ...]:
    row: list[Cell] = []
    for column, text in enumerate(cells):
        if text is None:
            if row:  # covered by the cell on its left (a horizontal merge)
                last = row[-1]
                row[-1] = Cell(last.text, last.column, last.span + 1, last.continued)
            continue
        row.append(Cell(join_wrapped_lines(text), column))
    return tuple(row)
