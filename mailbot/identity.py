"""Who an applicant is: normalised contacts, name and institution, and when two forms name the same person.

A false duplicate (telling someone their second form is not counted, when it is a different person) is
worse than a missed one, so :func:`same_person` only merges on strong evidence: the same e-mail address
or mobile number, or the same name at the same institution, and never when the two forms contradict it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

# Names are read character by character (the surname from its own table): pypinyin's dictionary of
# phrases would only guess readings from everyday words, and it holds ~45 MB in every process.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "true")
from pypinyin import lazy_pinyin
from pypinyin.contrib.tone_convert import to_normal
from pypinyin.pinyin_dict import pinyin_dict
from rapidfuzz import fuzz

from mailbot.folding import CJK_CHAR, has_cjk, simplify
from mailbot.institutions import institution_of_domain, normalise_institution


@dataclass(frozen=True)
class Identity:
    email: str | None
    phone: str | None
    name_key: str | None
    institution_key: str | None


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
    characters = "".join(CJK_CHAR.findall(_CJK_HONORIFICS.sub("", name)))
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
    simplified = simplify(name).strip()
    syllables = _cjk_syllables(simplified) if has_cjk(simplified) else _latin_syllables(simplified)
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


def institution_from_email(address: str) -> str | None:
    """The institution an address's domain belongs to (x@mails.tsinghua.edu.cn → 清华大学), if known."""
    email = normalise_email(address)
    if email is None:
        return None
    return institution_of_domain(email.rsplit("@", 1)[1])


# ---------------------------------------------------------------------------------------------- people


# no name, institution or address is longer (the readers cap values at 500 characters): whatever
# reaches identity_of, it reads no more than this of a value
IDENTITY_CHARS = 1000
# the widths of the columns an identity is stored in (messages.person_*, applicants)
STORED_CHARS, STORED_PHONE_CHARS = 500, 100


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
    phone = normalise_phone(values.get("phone"))
    name_key = normalise_name(name) if name else None
    # cut once, here, to the columns that hold it: an absurdly long name is stored and matched alike
    return Identity(
        email=email[:STORED_CHARS] if email else None,
        phone=phone[:STORED_PHONE_CHARS] if phone else None,
        name_key=name_key[:STORED_CHARS] if name_key else None,
        institution_key=institution_key[:STORED_CHARS] if institution_key else None,
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
    plain = _TITLE_NOISE.sub("", simplify(title).lower())
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
