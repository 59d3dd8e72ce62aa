"""Who an applicant is: normalised contacts, name and institution, and when two forms name the same person.

A false duplicate (telling someone their second form is not counted, when it is a different person) is
worse than a missed one, so :func:`same_person` only merges on strong evidence: the same e-mail address
or mobile number, or the same name at the same institution, and never when the two forms contradict it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import opencc

# Names are read character by character (the surname from its own table): pypinyin's dictionary of
# phrases would only guess readings from everyday words, and it holds ~45 MB in every process.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "true")
from pypinyin import lazy_pinyin
from pypinyin.contrib.tone_convert import to_normal
from pypinyin.pinyin_dict import pinyin_dict
from rapidfuzz import fuzz

INSTITUTION_TABLE = "institutions.json"


@dataclass(frozen=True)
class Identity:
    email: str | None
    phone: str | None
    name_key: str | None
    institution_key: str | None


# ---------------------------------------------------------------------------------------------- text basics

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WHITESPACE = re.compile(r"\s+")


@cache
def _to_simplified() -> Any:
    return opencc.OpenCC("t2s")


def _simplify(text: str) -> str:
    """NFKC (full-width to ASCII, compatibility ideographs) then traditional to simplified."""
    folded = unicodedata.normalize("NFKC", text)
    return str(_to_simplified().convert(folded))


def _has_cjk(text: str) -> bool:
    return _CJK_CHAR.search(text) is not None


# ---------------------------------------------------------------------------------------------- names

# Readings a surname takes that differ from the everyday reading pypinyin picks (syllables space-separated).
_SURNAME_READINGS: dict[str, str] = {
    "万俟": "mo qi",
    "尉迟": "yu chi",
    "单于": "chan yu",
    "长孙": "zhang sun",
    "澹台": "tan tai",
    "曾": "zeng",
    "单": "shan",
    "解": "xie",
    "仇": "qiu",
    "区": "ou",
    "查": "zha",
    "朴": "piao",
    "盖": "ge",
    "乐": "yue",
    "缪": "miao",
    "覃": "qin",
    "翟": "zhai",
    "种": "chong",
    "秘": "bi",
    "召": "shao",
    "折": "she",
    "员": "yun",
    "隗": "wei",
    "祭": "zhai",
    "句": "gou",
    "宓": "fu",
    "黑": "he",
    "能": "nai",
    "冼": "xian",
    "洗": "xian",
    "瞿": "qu",
    "蕃": "pi",
    "谌": "chen",
    "逄": "pang",
    "眭": "sui",
    "郇": "huan",
    "莘": "shen",
    "圈": "juan",
    "难": "ning",
    "粘": "nian",
    "藏": "zang",
    "率": "lv",
    "柏": "bai",
    "贲": "ben",
    "繁": "po",
    "都": "du",
    "沈": "shen",
    "薄": "bo",
    "尉": "yu",
    "纪": "ji",
    "燕": "yan",
    "华": "hua",
    "任": "ren",
    "牟": "mou",
    "曲": "qu",
    "车": "che",
    "石": "shi",
    "相": "xiang",
    "朝": "chao",
    "应": "ying",
}
_COMPOUND_SURNAMES = frozenset(s for s in _SURNAME_READINGS if len(s) == 2) | frozenset(
    {"欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "令狐", "公孙", "慕容", "司徒", "夏侯", "宇文", "端木"}
)

_CJK_HONORIFICS = re.compile(r"(教授|副教授|老师|博士|研究员|副研究员|先生|女士|同学|院士)$")
_LATIN_HONORIFICS = re.compile(r"^(prof|professor|dr|mr|mrs|ms|miss)\.?\s+", re.IGNORECASE)
_LATIN_SEPARATORS = re.compile(r"[\s\-_.,'’·]+")


@cache
def _pinyin_syllables() -> frozenset[str]:
    """Every toneless pinyin syllable with a vowel (interjections like "m", "ng" left out)."""
    found: set[str] = set()
    for readings in pinyin_dict.values():
        for reading in readings.split(","):
            syllable = to_normal(reading)
            if syllable.isascii() and re.search("[aeiouv]", syllable):
                found.add(syllable)
    return frozenset(found)


def _split_pinyin(word: str) -> list[str]:
    """Split "xinyi" into the fewest syllables, ["xin", "yi"]; a word that is not pinyin stays whole.

    Linear in the word: each position keeps only its count and where its last syllable starts.
    """
    syllables = _pinyin_syllables()
    count: list[int | None] = [None] * (len(word) + 1)
    start_of: list[int] = [0] * (len(word) + 1)
    count[0] = 0
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - 6), end):
            head = count[start]
            if head is not None and word[start:end] in syllables:
                current = count[end]
                if current is None or head + 1 < current:
                    count[end], start_of[end] = head + 1, start
    if count[len(word)] is None or not word:
        return [word]
    split: list[str] = []
    end = len(word)
    while end > 0:
        split.append(word[start_of[end] : end])
        end = start_of[end]
    return split[::-1]


def _latin_syllables(name: str) -> list[str]:
    ascii_name = unicodedata.normalize("NFKD", name.replace("ü", "v").replace("Ü", "V"))
    ascii_name = "".join(ch for ch in ascii_name if not unicodedata.combining(ch)).lower()
    ascii_name = _LATIN_HONORIFICS.sub("", ascii_name)
    words = [w for w in _LATIN_SEPARATORS.split(ascii_name) if w]
    syllables: list[str] = []
    for word in words:
        syllables.extend(_split_pinyin(re.sub(r"^(l|n)yu", r"\1v", word)))
    return syllables


def _cjk_syllables(name: str) -> list[str]:
    characters = "".join(_CJK_CHAR.findall(_CJK_HONORIFICS.sub("", name)))
    if not characters:
        return []
    surname = characters[:2] if characters[:2] in _COMPOUND_SURNAMES else characters[:1]
    reading = _SURNAME_READINGS.get(surname)
    surname_syllables = reading.split() if reading else lazy_pinyin(surname)
    return [*surname_syllables, *lazy_pinyin(characters[len(surname) :])]


def normalise_name(name: str) -> str:
    """A key equal for 张伟, 張 偉, "Zhang Wei" and "Wei Zhang": the name's pinyin syllables, sorted.

    Chinese characters are read with the surname's own reading (曾 zeng, 单 shan …); Latin names are
    split into syllables so that "Xinyi Zhao", "Zhao Xin-Yi" and 赵欣怡 agree. Order is ignored because
    Latin names come in both orders; the key only ever decides together with an institution or a contact.
    """
    simplified = _simplify(name).strip()
    syllables = _cjk_syllables(simplified) if _has_cjk(simplified) else _latin_syllables(simplified)
    return " ".join(sorted(syllables))


# ---------------------------------------------------------------------------------------------- contacts

_EMAIL = re.compile(r"[a-z0-9._%+\-]+@[a-z0-9\-]+(\.[a-z0-9\-]+)+")
_MOBILE = re.compile(r"1[3-9]\d{9}")


def normalise_email(addr: object) -> str | None:
    """Lower-case ASCII address ("Ａ＠B.cn" → "a@b.cn"); None when there is no address in it."""
    if not isinstance(addr, str):
        return None
    folded = unicodedata.normalize("NFKC", addr).lower()
    found = _EMAIL.search(folded)
    return found.group(0) if found else None


def normalise_phone(p: object) -> str | None:
    """The digits as written, a +86/0086 country code dropped; None when too short to be a number."""
    if isinstance(p, bool) or p is None:
        return None
    text = f"{p:.0f}" if isinstance(p, float) else unicodedata.normalize("NFKC", str(p))
    digits = re.sub(r"\D", "", text)
    digits = re.sub(r"^(0086|86)(?=1[3-9]\d{9}$)", "", digits)
    return digits if len(digits) >= 7 else None


def is_mobile(phone: str | None) -> bool:
    """A personal mobile number: a landline is often an office's, shared by colleagues."""
    return phone is not None and _MOBILE.fullmatch(phone) is not None


# ---------------------------------------------------------------------------------------------- institutions


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
    simplified = _simplify(text).lower().strip()
    simplified = re.sub(r"^the\s+", "", re.sub(r"['’`]", "", simplified))
    if _has_cjk(simplified):
        return _WHITESPACE.sub("", simplified)
    words = _ENGLISH_ABBREVIATIONS.sub(lambda m: f" {_ENGLISH_WORDS[m.group(0)]} ", simplified)
    return _WHITESPACE.sub(" ", re.sub(r"[^\w()\- ]+", " ", words)).strip()


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
    if _has_cjk(key):
        return _resolve_chinese(key, own, table)
    return _resolve_english(key, own, table)


def institution_from_email(address: str) -> str | None:
    """The institution an address's domain belongs to (x@mails.tsinghua.edu.cn → 清华大学), if known."""
    email = normalise_email(address)
    if email is None:
        return None
    labels = email.rsplit("@", 1)[1].split(".")
    by_domain = _builtin_table().by_domain
    for start in range(len(labels) - 1):
        found = by_domain.get(".".join(labels[start:]))
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------- people


# no name, institution or address is longer (the readers cap values at 500 characters): whatever
# reaches identity_of, it reads no more than this of a value
IDENTITY_CHARS = 1000


def _text_value(values: Mapping[str, object], name: str, limit: int | None = None) -> str | None:
    value = values.get(name)
    return (value[:limit].strip() or None) if isinstance(value, str) else None


def identity_of(values: Mapping[str, object], sender: str | None, aliases: Mapping[str, str]) -> Identity:
    """The identity a form's fields describe.

    The sender's address is only a hint for the institution: secretaries and lab accounts send for
    several people, so it never stands in for the applicant's own e-mail.
    """
    email = normalise_email(_text_value(values, "email", IDENTITY_CHARS))
    name = _text_value(values, "applicant_name", IDENTITY_CHARS)
    institution = _text_value(values, "institution", IDENTITY_CHARS)
    institution_key = normalise_institution(institution, aliases) if institution else None
    if not institution_key:
        institution_key = institution_from_email(email or "") or institution_from_email(sender or "")
    return Identity(
        email=email,
        phone=normalise_phone(values.get("phone")),
        name_key=(normalise_name(name) or None) if name else None,
        institution_key=institution_key or None,
    )


def match_reason(a: Identity, b: Identity) -> str | None:
    """Why ``a`` and ``b`` are the same person ("email", "mobile", "name+institution"), or None."""
    names_differ = bool(a.name_key and b.name_key and a.name_key != b.name_key)
    if not names_differ:
        if a.email and a.email == b.email:
            return "email"
        if is_mobile(a.phone) and a.phone == b.phone:
            return "mobile"
    same_name_and_place = bool(
        a.name_key and a.name_key == b.name_key and a.institution_key and a.institution_key == b.institution_key
    )
    contacts_differ = bool(a.email and b.email and a.email != b.email) and bool(
        a.phone and b.phone and a.phone != b.phone
    )
    if same_name_and_place and not contacts_differ:
        return "name+institution"
    return None


def same_person(a: Identity, b: Identity) -> bool:
    """Same e-mail or mobile (unless the forms name different people), or same name at the same place.

    Two forms with the same name and institution but a different e-mail *and* a different phone are
    treated as two people: a shared common name is not evidence enough.
    """
    return match_reason(a, b) is not None


# ---------------------------------------------------------------------------------------------- projects

_TITLE_NOISE = re.compile(r"[^\w]|_")
# words nearly every title of these calls contains: they make different projects look alike
_TITLE_BOILERPLATE = re.compile(r"基于|面向|大模型|研究|方法|关键技术|技术|及其|应用|的|与|和|及")
SIMILAR_TITLE_SCORE = 80.0


def _title_core(title: str) -> tuple[str, str]:
    plain = _TITLE_NOISE.sub("", _simplify(title).lower())
    return plain, _TITLE_BOILERPLATE.sub("", plain)


def title_similarity(a: str | None, b: str | None) -> float:
    """0..100: how alike two project titles are once punctuation and boilerplate words are set aside."""
    if not a or not b:
        return 0.0
    plain_a, core_a = _title_core(a)
    plain_b, core_b = _title_core(b)
    if plain_a == plain_b:
        return 100.0 if plain_a else 0.0
    if core_a and core_b:
        shorter, longer = sorted((core_a, core_b), key=len)
        if len(shorter) >= 6 and shorter in longer:
            return max(SIMILAR_TITLE_SCORE, float(fuzz.ratio(core_a, core_b)))  # a subtitle added or dropped
        return float(fuzz.ratio(core_a, core_b))
    return float(fuzz.ratio(plain_a, plain_b))


def similar_title(a: str | None, b: str | None) -> bool:
    """Same project: equal after normalisation, or differing only by a typo or slight rewording."""
    return title_similarity(a, b) >= SIMILAR_TITLE_SCORE
