"""A blank form's labels matched to the field kinds the readers know, and named for the configuration.

A label is matched by either half of a bilingual label ("项目名称 Project Title"), allowing words
such as "负责人" or "Applicant's" before a known label; the others stay text fields (or yes/no,
gender, money when their options or column say so) under an ASCII name from their English half or
the pinyin of their words.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from parsers.form_labels import UNIT, FoundLabel, ListTable
from parsers.known_fields import KNOWN_FIELDS, KnownField
from parsers.spec import FieldKind
from parsers.textnorm import has_cjk, label_key, strip_hints

# Words before a known label that keep its meaning: "负责人姓名" is the applicant's name, "申请人邮箱" an email.
_OWNER_PREFIXES = (
    "项目负责人",
    "负责人",
    "申请人",
    "申报人",
    "主持人",
    "所在",
    "联系人",
    "applicant's",
    "applicant",
    "pi's",
    "pi",
    "your",
    "contact",
)
_YESNO_CHINESE = re.compile(r"^(?:是否|有无)")
_YESNO_ENGLISH = re.compile(r"^(?:is|are|has|have|do|does|did|will|was|were)\b.*\?$|\(yes/no\)|yes\s*/\s*no", re.I)
_BILINGUAL = re.compile(r"^([^A-Za-z]*[\u3400-\u9fff][^A-Za-z]*?)\s*([A-Za-z][A-Za-z0-9 .,'()/&?\-]*)$")
_MONEY_COLUMN = re.compile(r"金额|万元|经费|预算|amount|budget|cost|cny|rmb", re.IGNORECASE)


@dataclass(frozen=True)
class MatchedLabel:
    label: FoundLabel
    name: str
    kind: FieldKind
    known: bool  # matched a field mailbot knows (False: kept as a text field)
    labels: tuple[str, ...]  # what the configuration lists: the label as printed and its halves


def halves(label: str) -> tuple[str, ...]:
    """ "项目名称 Project Title" → ("项目名称", "Project Title"); a one-language label → itself."""
    text = strip_hints(" ".join(label.split()))
    found = _BILINGUAL.match(text)
    if found:
        return tuple(part.strip() for part in found.groups() if part.strip())
    return (text,) if text else ()


def _synonym_keys() -> dict[str, KnownField]:
    keys: dict[str, KnownField] = {}
    for known in KNOWN_FIELDS:
        for synonym in known.synonyms:
            keys.setdefault(_compare_key(synonym), known)
    return keys


def _compare_key(text: str) -> str:
    return label_key(UNIT.sub("", text)).rstrip("?？")


def known_field_of(label: str) -> KnownField | None:
    """The known field a label names, by either of its halves, allowing "负责人" / "Applicant's" before it."""
    keys = _synonym_keys()
    for half in halves(label):
        key = _compare_key(half)
        candidates = [key]
        for prefix in _OWNER_PREFIXES:
            folded = label_key(prefix)
            if key.startswith(folded) and len(key) > len(folded):
                candidates.append(key[len(folded) :].lstrip("'s"))
        for candidate in candidates:
            if candidate in keys:
                return keys[candidate]
    return None


def kind_of_unknown(label: FoundLabel) -> FieldKind:
    options = {option.casefold() for option in label.options}
    if options & {"是", "否", "有", "无", "yes", "no"}:
        return "yesno"
    if options & {"男", "女", "male", "female"}:
        return "gender"
    if any(_YESNO_CHINESE.match(half) or _YESNO_ENGLISH.search(half) for half in halves(label.text)):
        return "yesno"
    if _MONEY_COLUMN.search(label.column):
        return "money"  # an item of a budget table, under "金额（万元）"
    return "text"


def readable_name(label: str) -> str:
    """An ASCII field name from a label: its English half in snake case, else the pinyin of its words."""
    parts = halves(label)
    english = next((part for part in parts if not has_cjk(part)), "")
    words: list[str]
    if english:
        words = re.findall(r"[a-z0-9]+", UNIT.sub("", english).casefold())
    else:
        import jieba
        from pypinyin import lazy_pinyin

        jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not the admin's business

        chinese = re.sub(r"[^\u3400-\u9fff]", "", UNIT.sub("", parts[0] if parts else label))
        words = ["".join(lazy_pinyin(word)) for word in jieba.lcut(chinese, HMM=False) if word.strip()]
    name = "_".join(word for word in words if word)[:40].strip("_")
    return name if name and name[0].isalpha() else f"field_{name}".strip("_")


def match_labels(
    labels: tuple[FoundLabel, ...] | list[FoundLabel], lists: tuple[ListTable, ...] | list[ListTable] = ()
) -> list[MatchedLabel]:
    """Each label with its field name and kind; a known field is taken once, by its first label.

    A known field also lists the usual synonyms of its label (an applicant who retypes the form
    may write "姓名" for "申请人姓名"), except those the form itself prints elsewhere.
    """
    printed = {_compare_key(half) for found in labels for half in (found.text, *halves(found.text))}
    printed |= {_compare_key(column) for table in lists for column in table.columns}
    matched: list[MatchedLabel] = []
    taken: set[str] = set()
    for found in labels:
        known = known_field_of(found.text)
        written = _config_labels(found.text)
        if known is not None and known.name not in taken:
            own = {_compare_key(text) for text in written}
            written += tuple(
                synonym
                for synonym in known.synonyms
                if _compare_key(synonym) not in printed - own and _compare_key(synonym) not in own
            )
            kind = known.kind
            if known.kind == "text" and kind_of_unknown(found) != "text":
                kind = kind_of_unknown(found)
            matched.append(MatchedLabel(found, known.name, kind, True, written))
            taken.add(known.name)
            continue
        kind = known.kind if known is not None else kind_of_unknown(found)
        base = readable_name(found.text)
        name, number = base, 1
        while name in taken:
            number += 1
            name = f"{base}_{number}"
        taken.add(name)
        matched.append(MatchedLabel(found, name, kind, False, written))
    return matched


def _config_labels(label: str) -> tuple[str, ...]:
    """The label as printed (without hints) and, for a bilingual one, each half on its own."""
    printed = strip_hints(" ".join(label.split()))
    found = [printed, *halves(label)]
    return tuple(dict.fromkeys(text for text in found if text))
