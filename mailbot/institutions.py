"""Which institution a written name or a mail domain stands for: the built-in table and the call's aliases.

清华大学计算机系, "Tsinghua Univ." and 清華大學 are one institution; a department is dropped, and an
institution the table does not know keeps its normalised written form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from mailbot.folding import WHITESPACE, has_cjk, simplify

INSTITUTION_TABLE = "institutions.json"


@dataclass(frozen=True)
class _InstitutionTable:
    by_alias: dict[str, str]  # normalised Chinese or English alias -> canonical Chinese name
    english: tuple[tuple[str, str], ...]  # normalised English names, longest first, for a match inside text
    by_domain: dict[str, str]
    parents: frozenset[str]  # academies whose own institutes are institutions of their own (中国科学院 …)
    longest_alias: int = 0  # no longer prefix of a name can be an alias: looking further is wasted


_ENGLISH_WORDS = {"univ": "university", "inst": "institute", "&": "and", "acad": "academy", "sci": "sciences"}
_ENGLISH_ABBREVIATIONS = re.compile(r"(?<!\w)(univ|inst|acad|sci)(?!\w)|&")


def _alias_key(text: str) -> str:
    """Case-, width-, script- and space-insensitive form; English keeps single spaces between words."""
    simplified = simplify(text).lower().strip()
    simplified = re.sub(r"^the\s+", "", re.sub(r"['’`]", "", simplified))
    if has_cjk(simplified):
        return WHITESPACE.sub("", simplified)
    words = _ENGLISH_ABBREVIATIONS.sub(lambda m: f" {_ENGLISH_WORDS[m.group(0)]} ", simplified)
    return WHITESPACE.sub(" ", re.sub(r"[^\w()\- ]+", " ", words)).strip()


def _load_table(rows: list[dict[str, Any]]) -> _InstitutionTable:
    by_alias: dict[str, str] = {}
    by_domain: dict[str, str] = {}
    english: list[tuple[str, str]] = []
    for row in rows:
        name = row["name"]
        for alias in [name, *row.get("short", []), *row.get("english", [])]:
            by_alias[_alias_key(alias)] = name
        english.extend((_alias_key(e), name) for e in row.get("english", []) if len(e) > 12)
        for domain in row.get("domains", []):
            by_domain[domain.lower()] = name
    english.sort(key=lambda item: -len(item[0]))
    parents = frozenset(row["name"] for row in rows if row.get("parent"))
    return _InstitutionTable(by_alias, tuple(english), by_domain, parents, max(map(len, by_alias), default=0))


@cache
def _builtin_table() -> _InstitutionTable:
    text = resources.files("mailbot").joinpath("data", INSTITUTION_TABLE).read_text(encoding="utf-8")
    return _load_table(json.loads(text))


# Where an institution's name ends when a department follows it and the table does not know the name.
_INSTITUTION_ENDS = ("大学", "学院", "研究院", "研究所", "实验室", "医院", "公司", "中心")
_PARENTHESISED = re.compile(r"\([^()]{1,8}\)")
_SUB_INSTITUTE = re.compile(r"^.{1,20}?(研究所|研究院|研究中心|所)")


def _cut_department(key: str) -> str:
    """清华大学计算机系 → 清华大学; the first (highest-ranked) institution ending wins."""
    for ending in _INSTITUTION_ENDS:
        position = key.find(ending, 1)
        if position > 0:
            end = position + len(ending)
            suffix = _PARENTHESISED.match(key, end)
            return key[: suffix.end()] if suffix else key[:end]
    return key


def _resolve_chinese(key: str, aliases: Mapping[str, str], table: _InstitutionTable) -> str:
    longest = max(table.longest_alias, max(map(len, aliases), default=0))
    for length in range(min(len(key), longest), 1, -1):
        prefix = key[:length]
        canonical = aliases.get(prefix) or table.by_alias.get(prefix)
        if canonical is None:
            continue
        rest = key[length:]
        if rest and prefix != _alias_key(canonical) and "大学" in rest:
            continue  # 西交利物浦大学 is not 西交 (西安交通大学) plus a department
        institute = _SUB_INSTITUTE.match(rest)
        if canonical in table.parents and institute:
            # 中国科学院某某研究所 not in the table: the institute, not the whole academy
            return canonical + institute.group(0)
        return canonical
    return _cut_department(key)


_COMPASS = frozenset({"east", "west", "south", "north", "northeast", "northwest", "southeast", "southwest", "central"})
_NAME_GOES_ON = re.compile(r"\s+(of|for|and|in|at)\b")


def _contains_name(text: str, name: str) -> bool:
    """``name`` stands in ``text`` as a whole name: "nanjing university" is not inside "nanjing
    university of finance", nor "china university of …" inside "east china university of …"."""
    for found in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
        # the word before it (no compass word is longer than 20 letters): never the whole text again
        before = text[max(0, found.start() - 20) : found.start()].split()
        if before and before[-1] in _COMPASS:
            continue
        if _NAME_GOES_ON.match(text, found.end()):
            continue
        return True
    return False


def _resolve_english(key: str, aliases: Mapping[str, str], table: _InstitutionTable) -> str:
    parts = [part.strip() for part in key.split(",")]
    for part in [key, *parts]:
        canonical = aliases.get(part) or table.by_alias.get(part)
        if canonical:
            return canonical
    for english, canonical in table.english:
        if _contains_name(key, english):
            return canonical
    return key


def normalise_institution(name: str, aliases: Mapping[str, str] | None = None) -> str:
    """The canonical name of the institution written in ``name``, its department dropped.

    Built-in aliases (short names, English names) are resolved, then the call's own ``aliases``
    (which win). An institution the table does not know is returned in its normalised written form.
    """
    table = _builtin_table()
    own = {_alias_key(alias): canonical for alias, canonical in (aliases or {}).items()}
    # a call's alias may point at a name the built-in table spells differently (清华 → 清华大学)
    own = {alias: table.by_alias.get(_alias_key(canonical), canonical) for alias, canonical in own.items()}
    key = _alias_key(name)
    if not key:
        return ""
    if key in own:
        return own[key]
    if has_cjk(key):
        return _resolve_chinese(key, own, table)
    return _resolve_english(key, own, table)


def institution_of_domain(domain: str) -> str | None:
    """The institution a mail domain or any of its parents belongs to (mails.tsinghua.edu.cn → 清华大学)."""
    labels = domain.lower().split(".")
    by_domain = _builtin_table().by_domain
    for start in range(len(labels) - 1):
        found = by_domain.get(".".join(labels[start:]))
        if found:
            return found
    return None
