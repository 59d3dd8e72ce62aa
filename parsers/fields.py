"""Find a call's fields in a laid-out document: labels from the FormSpec, values beside or below them.

Pairing, strongest first: a label cell and the cell to its right; a label cell and the cell below
(header-row tables, or labels alone in their row); "标签：值" inside a cell or a line. Filling-in
notes (填表说明 / Instructions) are skipped, since they mention example values.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from parsers.layout import Block, Cell, Grid
from parsers.model import DocumentKind, FieldValue, FormReading, Location, Unreadable
from parsers.spec import FormSpec
from parsers.textnorm import clean_value, label_key, strip_hints
from parsers.value_caps import VALUE_CAPS, bounded
from parsers.values import normalise

TIER_RIGHT = 3  # label cell, value cell to its right
TIER_BELOW = 2  # label cell, value cell below; or "label：value" inside a cell
TIER_INLINE = 1  # "label：value" on a line of text
TIER_GUESSED = 0  # no label: found by its shape in the text (see parsers.nlp)
# a column of a table of items (team members …): its first row, only where the label is nowhere else
TIER_LIST = -1
_TIER_CONFIDENCE = {TIER_RIGHT: 1.0, TIER_BELOW: 0.9, TIER_INLINE: 0.85, TIER_GUESSED: 0.5, TIER_LIST: 0.5}
# rows of values under a header row of labels that make it a table of items, not one value per label
_LIST_ROWS = 2

_NOTES_HEADING = re.compile(
    r"^\s*(?:填表说明|填写说明|申报说明|说明|注意事项|注|备注|instructions?|notes?)"
    r"\s*(?:[A-Za-z ]{0,20})?\s*(?:[:：]|$)",
    re.IGNORECASE,
)
_BILINGUAL = re.compile(r"^([^A-Za-z]+?)\s*([A-Za-z][A-Za-z0-9 .()/&'\-]*)$")
_PARENTHESISED = re.compile(r"[(（][^)）]*[)）]")
# A short word with a CJK character followed by a colon ends an inline value ("…　日期：").
_OTHER_LABEL = re.compile(r"(?<=\s)[^\s:：]{0,12}[\u4e00-\u9fff][^\s:：]{0,12}(?:\s+[A-Za-z][A-Za-z .]{0,20})?\s*[:：]")
_PAIRS = {"(": "[(（]", "（": "[(（]", ")": "[)）]", "）": "[)）]"}
_CONTENT_KINDS = ("topic",)


@dataclass(frozen=True)
class Found:
    field: str
    raw: str
    tier: int
    order: int
    where: Location


class LabelIndex:
    """The spec's labels, compared the way a reader would: hints, marks, colons and spacing ignored."""

    def __init__(self, spec: FormSpec) -> None:
        self.spec = spec
        self._by_key: dict[str, str] = {}
        self._by_bare_key: dict[str, str] = {}
        for field in spec.fields:
            for label in field.labels:
                self._by_key.setdefault(label_key(label), field.name)
                self._by_bare_key.setdefault(_PARENTHESISED.sub("", label_key(label)), field.name)
        labelled = sorted(
            ((label, field.name) for field in spec.fields for label in field.labels),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._group_field = {f"l{number}": name for number, (_, name) in enumerate(labelled)}
        alternatives = "|".join(f"(?P<l{number}>{_label_pattern(label)})" for number, (label, _) in enumerate(labelled))
        self._inline = re.compile(
            rf"(?<![\w])(?:{alternatives})(?:\s*[A-Za-z][A-Za-z0-9 .()/&'\-]{{0,40}}?)?"
            r"\s*(?:[（(\[【][^）)\]】\n]{0,12}[）)\]】])?\s*[*＊]?\s*[:：]",
            re.IGNORECASE,
        )

    def field_of(self, text: str) -> str | None:
        """The field a cell's whole text labels, if it is a label."""
        key = label_key(text)
        if not key or len(key) > 80:
            return None
        if key in self._by_key:
            return self._by_key[key]
        bilingual = _BILINGUAL.match(strip_hints(re.sub(r"\s+", " ", text)))
        if bilingual and self._is_label_translation(bilingual.group(2)):
            for part in bilingual.groups():
                part_key = label_key(part)
                if part_key in self._by_key:
                    return self._by_key[part_key]
        bare = _PARENTHESISED.sub("", key)
        return self._by_bare_key.get(bare) if bare else None

    def _is_label_translation(self, latin: str) -> bool:
        """The English half of "中文 English": a known label, or a few words without digits (not a value)."""
        bare = _PARENTHESISED.sub("", latin)
        if label_key(bare) in self._by_key:
            return True
        return not any(char.isdigit() for char in bare) and len(bare.split()) <= 4

    def fields_mentioned(self, text: str) -> set[str]:
        """Fields whose label occurs anywhere in ``text`` (a quick test for pages worth laying out)."""
        compact = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()
        return {name for key, name in self._by_key.items() if key and key in compact}

    def spaced_pairs(self, text: str) -> list[tuple[str, str]]:
        """For a line that starts with a label and has no colons ("申请人姓名 张伟 性别 男", a borderless
        table's row as a PDF's text layer gives it): each label with the words up to the next label."""
        return _spaced_pairs(self, text)

    def inline_pairs(self, text: str) -> list[tuple[str, str]]:
        """("field", "raw value") for each "label：value" in ``text``."""
        matches = list(self._inline.finditer(text))
        pairs = []
        for number, match in enumerate(matches):
            end = matches[number + 1].start() if number + 1 < len(matches) else len(text)
            value = text[match.end() : end]
            stop = _OTHER_LABEL.search(value)
            if stop:
                value = value[: stop.start()]
            group = next(name for name, matched in match.groupdict().items() if matched is not None)
            pairs.append((self._group_field[group], value))
        return pairs


@lru_cache(maxsize=16)
def label_index(spec: FormSpec) -> LabelIndex:
    """The index of ``spec``'s labels, built once per spec: every document of a call is read with the
    same spec, and building the index (one pattern of every label) cost 0.4 ms per message."""
    return LabelIndex(spec)


_MAX_LABEL_WORDS = 6


def _spaced_pairs(index: LabelIndex, text: str) -> list[tuple[str, str]]:
    words = text.split()
    labels: list[tuple[int, int, str]] = []  # (first word, word after the label, field)
    position = 0
    while position < len(words):
        for end in range(min(len(words), position + _MAX_LABEL_WORDS), position, -1):
            field = index.field_of(" ".join(words[position:end]))
            if field is not None:
                labels.append((position, end, field))
                position = end
                break
        else:
            position += 1
    if not labels or labels[0][0] != 0:
        return []
    pairs = []
    for number, (_, end, field) in enumerate(labels):
        stop = labels[number + 1][0] if number + 1 < len(labels) else len(words)
        pairs.append((field, " ".join(words[end:stop])))
    # A line of labels alone is a label cell wrapped by the layout, not a row of blank values.
    return pairs if any(value for _, value in pairs) else []


def _label_pattern(label: str) -> str:
    pieces = []
    for char in unicodedata.normalize("NFKC", label):
        if char.isspace():
            continue
        pieces.append(_PAIRS.get(char, re.escape(char)))
    return r"\s*".join(pieces)


def find_values(blocks: list[Block], index: LabelIndex) -> list[Found]:
    found: list[Found] = []
    in_notes = False
    for block in blocks:
        if isinstance(block, Grid):
            in_notes = False
            found.extend(_grid_values(block, index, len(found)))
            continue
        if _NOTES_HEADING.match(block.text):
            in_notes = True
        if in_notes:
            continue
        pairs = index.inline_pairs(block.text) or index.spaced_pairs(block.text)
        for field, raw in pairs:
            found.append(Found(field, raw, TIER_INLINE, len(found), block.where))
    return found


def _grid_values(grid: Grid, index: LabelIndex, order: int) -> list[Found]:
    found: list[Found] = []
    items = _item_rows(grid, index)
    for row_number, row in enumerate(grid.rows):
        where = Location(grid.where.file, grid.where.page, grid.where.table, row_number + 1)
        if row_number in items:
            if items[row_number]:  # a header row: each label over its column
                found.extend(_column_heads(grid, index, row_number, order + len(found)))
            continue
        for position, cell in enumerate(row):
            if cell.continued:
                continue
            field = index.field_of(cell.text)
            if field is None:
                text = cell.text
                pairs = index.inline_pairs(text) or _label_over_value(index, text) or index.spaced_pairs(text)
                for inline_field, raw in pairs:
                    found.append(Found(inline_field, raw, TIER_BELOW, order + len(found), where))
                continue
            right = _right_of(row, position)
            if right is not None and index.field_of(right.text) is None:
                found.append(Found(field, right.text, TIER_RIGHT, order + len(found), where))
                continue
            below = _below(grid, row_number, cell)
            if below is not None and index.field_of(below.text) is None:
                below_where = Location(where.file, where.page, where.table, row_number + 2)
                found.append(Found(field, below.text, TIER_BELOW, order + len(found), below_where))
            else:
                found.append(Found(field, "", TIER_BELOW, order + len(found), where))
    return found


def _cells(row: tuple[Cell, ...]) -> list[Cell]:
    return [cell for cell in row if not cell.continued]


def _item_rows(grid: Grid, index: LabelIndex) -> dict[int, bool]:
    """The rows of the grid's tables of items, True for a header row and False for the rows of items.

    A table of items (项目组主要成员: 姓名 | 单位 | 职称 | 分工, a row per member) repeats labels
    the applicant's own cells have: read as one value per label, a blank 职称 of the applicant
    would become the first member's title, or the heading "分工" beside it. A header row has two
    of the call's labels side by side; under it, at least two rows of as many cells and none of
    the call's labels. A labels-above-values row of the applicant has one row of values under it.
    """
    rows = grid.rows
    items: dict[int, bool] = {}
    for number, row in enumerate(rows):
        if number in items:
            continue
        labels = [index.field_of(cell.text) is not None for cell in _cells(row)]
        width = len(labels)
        if not any(left and right for left, right in pairwise(labels)):
            continue  # a row of label | value pairs never has two labels side by side
        below = number + 1
        while (
            below < len(rows)
            and len(_cells(rows[below])) == width
            and all(index.field_of(cell.text) is None for cell in _cells(rows[below]))
        ):
            below += 1
        if below - number - 1 >= _LIST_ROWS:
            items[number] = True
            items.update(dict.fromkeys(range(number + 1, below), False))
    return items


def _column_heads(grid: Grid, index: LabelIndex, row_number: int, order: int) -> list[Found]:
    """Each label of a header row with the first item's value under it, found at the lowest tier."""
    found: list[Found] = []
    below_where = Location(grid.where.file, grid.where.page, grid.where.table, row_number + 2)
    for cell in _cells(grid.rows[row_number]):
        field = index.field_of(cell.text)
        first = _below(grid, row_number, cell)
        if field is not None:
            value = first.text if first is not None else ""
            found.append(Found(field, value, TIER_LIST, order + len(found), below_where))
    return found


def _label_over_value(index: LabelIndex, text: str) -> list[tuple[str, str]]:
    """A cell typed into under its label: "项目名称" (and maybe "Project Title") then the value."""
    lines = [line for line in text.splitlines() if line.strip()]
    for label_lines in (2, 1):
        if len(lines) > label_lines:
            field = index.field_of(" ".join(lines[:label_lines]))
            if field is not None:
                return [(field, "\n".join(lines[label_lines:]))]
    return []


def _right_of(row: tuple[Cell, ...], position: int) -> Cell | None:
    for cell in row[position + 1 :]:
        if not cell.continued:
            return cell
    return None


def _below(grid: Grid, row_number: int, label: Cell) -> Cell | None:
    if row_number + 1 >= len(grid.rows):
        return None
    for cell in grid.rows[row_number + 1]:
        if cell.covers(label.column) and not cell.continued:
            return cell
    return None


def best_per_field(found: list[Found]) -> dict[str, Found]:
    """The strongest pairing per field; among equals a filled value, then the first in the document."""
    chosen: dict[str, Found] = {}
    for item in found:
        current = chosen.get(item.field)
        if current is None or _rank(item) > _rank(current):
            chosen[item.field] = item
    return chosen


def _rank(item: Found) -> tuple[int, bool, int]:
    return item.tier, bool(clean_value(item.raw)), -item.order


def looks_like_form(spec: FormSpec, labelled: set[str]) -> bool:
    """At least three of the call's labels, one of them about the project (its title or topic).

    A CV next to the form names a person, an institution and contacts, but never the project.
    """
    if len(labelled) < 3:
        return False
    return any(
        field.name in labelled and (field.kind in _CONTENT_KINDS or (field.kind == "text" and field.required))
        for field in spec.fields
    )


def match_score(spec: FormSpec, labelled: set[str]) -> float:
    """Share of the call's fields whose label is present, required ones counting double."""
    weights = {field.name: 2.0 if field.required else 1.0 for field in spec.fields}
    total = sum(weights.values())
    return round(sum(weights[name] for name in labelled if name in weights) / total, 3) if total else 0.0


def read_form(
    blocks: list[Block],
    spec: FormSpec,
    *,
    attachment: str,
    sha256: str,
    kind: DocumentKind,
    guess: bool = True,
) -> FormReading | Unreadable | None:
    """The form's fields, ``Unreadable("no-fields")`` for an empty form, None for another document."""
    index = label_index(spec)
    chosen = best_per_field(find_values(blocks, index))
    labelled = set(chosen)
    if not looks_like_form(spec, labelled):
        return None
    fields: dict[str, FieldValue] = {}
    written: dict[str, int] = {}
    for field in spec.fields:
        item = chosen.get(field.name)
        if item is None:
            continue
        # normalising reads a little beyond the cap, never the whole of a hostile cell
        raw = item.raw[: 4 * VALUE_CAPS[field.kind]]
        value, certainty = normalise(field.kind, raw, spec)
        confidence = round(_TIER_CONFIDENCE[item.tier] * certainty, 3)
        written[field.name] = len(item.raw)
        fields[field.name] = FieldValue(value, clean_value(raw), confidence, item.where)
    if guess:
        from parsers.nlp import guess_unlabelled

        fields.update(
            guess_unlabelled(blocks, spec, missing_labels=[f.name for f in spec.fields if f.name not in labelled])
        )
    kinds = {field.name: field.kind for field in spec.fields}
    cut: list[str] = []
    for name, found in list(fields.items()):
        fields[name], note = bounded(name, kinds.get(name, "text"), found, written.get(name, 0))
        if note:
            cut.append(note)
    values: dict[str, object] = {name: field_value.value for name, field_value in fields.items()}
    if all(value is None for value in values.values()):
        return Unreadable("no-fields", attachment, "the form's labels are there but every value is blank")
    return FormReading(
        attachment=attachment,
        sha256=sha256,
        kind=kind,
        fields=fields,
        missing=spec.missing(values),
        score=match_score(spec, labelled),
        cut=tuple(cut),
    )
