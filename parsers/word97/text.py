"""[MS-DOC] 2.4.1 "Retrieving Text", 2.4.2 "Determining Paragraph Boundaries", 2.8.25 "Fields".

The characters of a range become paragraphs: a paragraph ends at 0x0D, at a cell mark 0x07 or a
section mark 0x0C. 0x13 begins a field, 0x14 separates its instruction from its result, 0x15 ends
it; only the result is text a reader sees. A FORMCHECKBOX field has no result: its state is in the
FFData its instruction's 0x01 points to, shown as ☑ or ☐. Text deleted with tracked changes
(sprmCFRMarkDel) is left out, as Word shows it once the changes are accepted.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from parsers.word97.sprms import MAX_DEPTH, PLAIN, ParagraphProperties

if TYPE_CHECKING:
    from parsers.word97.document import WordDocument

# Characters ([MS-DOC] 2.4.1 and 2.8.25).
PARAGRAPH_END = "\r"
CELL_MARK = "\x07"
SECTION_MARK = "\x0c"
_PARAGRAPH_ENDS = frozenset((PARAGRAPH_END, CELL_MARK, SECTION_MARK))
_FIELD_BEGIN, _FIELD_SEPARATOR, _FIELD_END = "\x13", "\x14", "\x15"
_PICTURE = "\x01"  # an object anchor; in a form field's instruction, where its FFData is
_CHECKED, _UNCHECKED = "☑", "☐"  # as the .docx reader shows legacy check boxes
_KEPT_CONTROLS = {"\t": "\t", "\x0b": "\n", "\x1e": "-"}  # tab, line break, non-breaking hyphen


@dataclass
class Field:
    """An open field ([MS-DOC] 2.8.25): its instruction until the separator, then its result."""

    in_result: bool = False
    instruction: str = ""
    checked: bool | None = None  # a FORMCHECKBOX's state, shown when the field ends


@dataclass
class Paragraph:
    text: str
    mark: str
    properties: ParagraphProperties


def paragraphs_of(document: WordDocument, cp_start: int, cp_end: int) -> list[Paragraph]:
    """The paragraphs of [cp_start, cp_end), fields shown as their results, deletions left out."""
    walk = TextWalk(document)
    for text, first, width in document.text.segments(cp_start, cp_end):
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


class TextWalk:
    """Characters to paragraphs: fields shown as their results, deleted text left out."""

    def __init__(self, document: WordDocument) -> None:
        self.document = document
        self.paragraph_starts = [run[0] for run in document.paragraph_runs]
        self.character_starts = [run[0] for run in document.character_runs]
        self.deleted_starts = [start for start, _ in document.deleted]
        self.fields: list[Field] = []  # the fields open here, outermost first
        self.showing = True  # no open field is in its instruction
        self.parts: list[str] = []
        self.found: list[Paragraph] = []

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
            properties = PLAIN
            if char != SECTION_MARK:
                properties = self.document.properties_at(self.paragraph_starts, offset)
            self.found.append(Paragraph("".join(self.parts), char, properties))
            self.parts = []
            return
        if self.document.deleted and self.document.is_deleted(self.deleted_starts, offset):
            return
        if char == _FIELD_BEGIN:
            if len(self.fields) < MAX_DEPTH * 4:
                self.fields.append(Field())
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

    def finish(self) -> list[Paragraph]:
        if any(part.strip() for part in self.parts):
            self.found.append(Paragraph("".join(self.parts), PARAGRAPH_END, PLAIN))
        return self.found
