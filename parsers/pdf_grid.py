"""A PDF page's tables from pdfium's geometry, cut the way pdfplumber cuts them.

pdfplumber finds tables from the page's ruled edges and fills cells with the characters whose
centre lies inside, but it gets both from pdfminer, which interprets the page's content stream in
pure Python: most of the cost of reading a PDF form. pdfium (C) already has the page loaded, so its
path segments become the edges and its characters the text, and pdfplumber's own TableFinder turns
them into cells and cell text. Pages where the two could disagree (rotation, an offset media box,
form XObjects, Bézier curves, rotated or astral characters) get None, and pdfplumber reads them.
"""

from __future__ import annotations

import ctypes
import itertools
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pdfplumber.page import Page

Table = list[list[str | None]]
Point = tuple[float, float]
_LINE_BREAKS = (0x0A, 0x0D)
_PRECISION = 3  # pdfium gives single-precision floats; pdfminer the decimals written in the file


class _GeometryPage:
    """What pdfplumber's TableFinder and Table.extract read of a page with the "lines" strategies."""

    def __init__(self, width: float, height: float, edges: list[dict[str, Any]], chars: list[dict[str, Any]]) -> None:
        self.bbox = (0.0, 0.0, width, height)
        self.edges = edges
        self.chars = chars


def page_tables(page: Any, textpage: Any) -> list[Table] | None:
    """The page's tables as pdfplumber's ``extract_tables`` gives them, or None to let it read the page."""
    from pdfplumber.table import TableFinder

    width, height = page.get_size()
    if page.get_rotation() or tuple(page.get_mediabox()) != (0, 0, width, height):
        return None
    if tuple(page.get_cropbox()) != tuple(page.get_mediabox()):
        return None
    edges = _edges(page, height)
    chars = _chars(textpage, height) if edges is not None else None
    if edges is None or chars is None:
        return None
    finder = TableFinder(cast("Page", _GeometryPage(width, height, edges, chars)))
    return [table.extract() for table in finder.tables]


def _edges(page: Any, height: float) -> list[dict[str, Any]] | None:
    """Horizontal and vertical segments of every painted path, in pdfplumber's top-down coordinates."""
    import pypdfium2.raw as pdfium_c

    edges: list[dict[str, Any]] = []
    x, y = ctypes.c_float(), ctypes.c_float()
    fill, stroke = ctypes.c_int(), ctypes.c_int()
    for found in page.get_objects(max_depth=1):
        if found.type == pdfium_c.FPDF_PAGEOBJ_FORM:
            return None  # pdfminer descends into form XObjects in its own way
        if found.type != pdfium_c.FPDF_PAGEOBJ_PATH:
            continue
        path = found.raw
        pdfium_c.FPDFPath_GetDrawMode(path, fill, stroke)
        if not fill.value and not stroke.value:
            continue  # a clipping path: pdfminer makes no object of it
        a, b, c, d, e, f = found.get_matrix().get()
        subpaths: list[list[Point]] = []
        for index in range(pdfium_c.FPDFPath_CountSegments(path)):
            segment = pdfium_c.FPDFPath_GetPathSegment(path, index)
            kind = pdfium_c.FPDFPathSegment_GetType(segment)
            if kind == pdfium_c.FPDF_SEGMENT_BEZIERTO:
                return None  # pdfminer's curve points include control points
            pdfium_c.FPDFPathSegment_GetPoint(segment, x, y)
            point = (
                round(a * x.value + c * y.value + e, _PRECISION),
                round(height - (b * x.value + d * y.value + f), _PRECISION),
            )
            if kind == pdfium_c.FPDF_SEGMENT_MOVETO or not subpaths:
                subpaths.append([point])
            else:
                subpaths[-1].append(point)
            if pdfium_c.FPDFPathSegment_GetClose(segment):
                subpaths[-1].append(subpaths[-1][0])
        edges.extend(edge for points in subpaths for edge in _straight_edges(points))
    return edges


def _straight_edges(points: list[Point]) -> list[dict[str, Any]]:
    edges = []
    for (x0, top0), (x1, top1) in itertools.pairwise(points):
        orientation = "v" if x0 == x1 else "h" if top0 == top1 else None
        if orientation is None:
            continue  # a slanted line is no table edge
        top = min(top0, top1)
        edges.append(
            {
                "object_type": "curve_edge",
                "x0": min(x0, x1),
                "x1": max(x0, x1),
                "top": top,
                "doctop": top,
                "bottom": max(top0, top1),
                "width": abs(x0 - x1),
                "height": abs(top0 - top1),
                "orientation": orientation,
            }
        )
    return edges


def _chars(textpage: Any, height: float) -> list[dict[str, Any]] | None:
    """The page's characters, each in its loose box (the advance width pdfminer uses), top-down."""
    import pypdfium2.raw as pdfium_c

    handle = textpage.raw
    chars: list[dict[str, Any]] = []
    for index in range(pdfium_c.FPDFText_CountChars(handle)):
        if pdfium_c.FPDFText_IsGenerated(handle, index):
            continue  # spaces and line breaks pdfium inferred: pdfplumber infers its own
        code = pdfium_c.FPDFText_GetUnicode(handle, index)
        if code in _LINE_BREAKS:
            continue
        if 0xD800 <= code <= 0xDFFF or pdfium_c.FPDFText_GetCharAngle(handle, index) != 0:
            return None  # half of an astral character, or turned text: pdfplumber groups them its own way
        left, bottom, right, top = textpage.get_charbox(index, loose=True)
        chars.append(
            {
                "text": chr(code),
                "x0": left,
                "x1": right,
                "top": height - top,
                "doctop": height - top,
                "bottom": height - bottom,
                "upright": True,
            }
        )
    return chars
