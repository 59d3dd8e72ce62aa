"""The topic list of a call, read from the attachment the call publishes it in.

A Word or PDF document, a spreadsheet, CSV, plain text or JSON: lines such as ``1.1 名称`` or a
code column, with the direction headings above them; ``call new`` writes what it finds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parsers.form_labels import document_blocks
from parsers.layout import Block, Grid
from parsers.limits import Limits
from parsers.spec import Topic
from parsers.textnorm import clean_value

_CODE = r"[A-Za-z]{0,8}[-_]?\d{1,3}(?:\s*[.．]\s*\d{1,3})*"
_CODED_LINE = re.compile(rf"^\s*(?:课题|选题|Topic)?\s*({_CODE})\s*(?:[、.．:：)）]|\s)\s*(\S.*)$", re.IGNORECASE)
_WHOLE_CODE = re.compile(rf"^\s*{_CODE}\s*$")
_HEADING_MARK = re.compile(r"^\s*(?:[一二三四五六七八九十]+[、.．]|方向\s*\d*\s*[:：、]?|Direction\s*\d*\s*[:：.]?)\s*")


def read_topics(path: Path, limits: Limits | None = None) -> list[Topic]:
    """The topic list of a call from its published file: .json, .csv, .xlsx, .txt or .docx."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix == ".json":
        return _json_topics(json.loads(data.decode("utf-8-sig")))
    if suffix == ".csv":
        return _row_topics(list(csv.reader(io.StringIO(data.decode("utf-8-sig")))))
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        return _row_topics(
            [["" if cell is None else str(cell) for cell in row] for row in sheet.iter_rows(values_only=True)]
        )
    if suffix in (".docx", ".doc", ".pdf"):
        return _block_topics(document_blocks(data, path.name, limits or Limits()))
    return _line_topics(data.decode("utf-8-sig", errors="replace").splitlines())


def _json_topics(raw: Any) -> list[Topic]:
    if isinstance(raw, dict) and isinstance(raw.get("directions"), list):
        return [
            Topic(str(topic["code"]), str(topic["name"]), str(direction.get("name", "")))
            for direction in raw["directions"]
            for topic in direction.get("topics", [])
        ]
    items = raw.get("topics", []) if isinstance(raw, dict) else raw
    return [Topic(str(t["code"]), str(t["name"]), str(t.get("direction", ""))) for t in items]


def _row_topics(rows: Sequence[Sequence[str]]) -> list[Topic]:
    """Rows of a sheet: the cell holding a code, the name after it, a direction before it or after the name."""
    topics: list[Topic] = []
    carried = ""  # a direction written once for the rows under it (merged cells)
    for row in rows:
        cells = [clean_value(cell) for cell in row]
        code_at = next((number for number, cell in enumerate(cells) if _WHOLE_CODE.match(cell)), None)
        if code_at is None:
            continue  # a header or a blank row
        rest = [cell for cell in cells[code_at + 1 :] if cell]
        before = [cell for cell in cells[:code_at] if cell]
        if before:
            carried = before[-1]
        if not rest:
            continue
        direction = before[-1] if before else rest[1] if len(rest) > 1 else carried
        topics.append(Topic(_code(cells[code_at]), rest[0], direction))
    return topics


def _block_topics(blocks: list[Block]) -> list[Topic]:
    topics: list[Topic] = []
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Grid):
            rows = [[cell.text for cell in row] for row in block.rows]
            topics.extend(_row_topics(rows))
        else:
            lines.extend(block.text.splitlines())
    return topics or _line_topics(lines)


def _line_topics(lines: Sequence[str]) -> list[Topic]:
    """ "1.1 名称" lines under direction headings; a code others extend ("1" of "1.1") is a direction."""
    entries: list[tuple[str, str, str]] = []  # code, name, heading above it
    heading = ""
    for line in lines:
        text = clean_value(line)
        if not text:
            continue
        coded = _CODED_LINE.match(text)
        if coded and not _HEADING_MARK.match(text):
            entries.append((_code(coded.group(1)), coded.group(2).strip(), heading))
        elif len(text) <= 40:
            heading = _HEADING_MARK.sub("", text).strip()
    codes = [code for code, _, _ in entries]
    directions = {code: name for code, name, _ in entries if any(other.startswith(code + ".") for other in codes)}
    topics = []
    for code, name, above in entries:
        if code in directions:
            continue
        parent = code.rsplit(".", 1)[0] if "." in code else ""
        topics.append(Topic(code, name, directions.get(parent, above)))
    return topics


def _code(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("．", "."))
