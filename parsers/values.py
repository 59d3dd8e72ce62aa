"""From the raw text of a value cell to the value a careful coordinator records (see the corpus rules).

Each normaliser returns the value and how sure it is of the reading (0..1); ``None`` is a blank.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rapidfuzz import fuzz

from parsers.spec import FieldKind, FormSpec, Topic
from parsers.textnorm import ascii_fold, clean_value, has_cjk

Normalised = tuple[str | float | bool | None, float]

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+?\d[\d\s\-‐‑–—().]{5,}\d")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_TOPIC_CODE = re.compile(r"([A-Za-z]{1,8})?\s*[-_ ]?\s*(\d+(?:\s*[.．]\s*\d+)*)")
_CHECKED = "☑☒■√✓✔●◉▣"
_UNCHECKED = "☐□○◯"
# Word's default prompts of a content control: shown (and printed into a PDF) until something is typed
_WORD_PROMPTS = (
    "单击或点击此处输入文字",
    "单击此处输入文字",
    "点击或单击此处输入文字",
    "选择一项",
    "单击或点击此处输入日期",
    "单击此处输入日期",
    "click or tap here to enter text",
    "click here to enter text",
    "choose an item",
    "click or tap to enter a date",
    "click here to enter a date",
)
_WORD_PROMPT_TEXTS = frozenset(prompt + end for prompt in _WORD_PROMPTS for end in ("", "。", "."))
_PLACEHOLDERS = frozenset({"无", "/", "-", "—", "——", "n/a", "na", "none", "null", "暂无", "空"}) | _WORD_PROMPT_TEXTS


def _blank(text: str) -> bool:
    return not text or text.casefold() in _PLACEHOLDERS


def text_value(raw: str) -> Normalised:
    value = clean_value(raw).rstrip("；;,，、")
    if not value or value.casefold() in _PLACEHOLDERS - {"无"}:
        return None, 1.0
    return value, 0.95


def name_value(raw: str) -> Normalised:
    value, confidence = text_value(raw)
    if not isinstance(value, str):
        return value, confidence
    if has_cjk(value):
        value = re.sub(r"\s+", "", value)
    return value, confidence


def email_value(raw: str) -> Normalised:
    folded = ascii_fold(raw).replace(" ", "")
    found = _EMAIL.search(folded)
    if found:
        return found.group(0).lower().strip("."), 0.98
    folded = folded.strip()
    if _blank(folded):
        return None, 1.0
    return folded.lower(), 0.4


def phone_value(raw: str) -> Normalised:
    folded = ascii_fold(raw)
    found = _PHONE.search(folded)
    if found:
        digits = re.sub(r"\D", "", found.group(0))
        return digits, 0.97 if 7 <= len(digits) <= 15 else 0.5
    if _blank(folded.strip()):
        return None, 1.0
    digits = re.sub(r"\D", "", folded)
    return (digits, 0.4) if digits else (clean_value(raw), 0.2)


def gender_value(raw: str) -> Normalised:
    folded = ascii_fold(raw).strip().casefold()
    if not folded or _blank(folded):
        return None, 1.0
    checked = _checked_option(raw)
    if checked is not None:
        folded = checked.casefold()
    if "女" in folded or re.search(r"\bf(emale)?\b", folded):
        return "女", 0.98
    if "男" in folded or re.search(r"\bm(ale)?\b", folded):
        return "男", 0.98
    return clean_value(raw), 0.3


def yesno_value(raw: str) -> Normalised:
    folded = ascii_fold(raw).strip()
    if not folded:
        return None, 1.0
    checked = _checked_option(raw)
    if checked is not None:
        folded = checked
    lowered = folded.casefold()
    if lowered.startswith(("否", "无", "未", "没有", "no", "n")):
        return False, 0.97
    if lowered.startswith(("是", "有", "已", "yes", "y")):
        return True, 0.97
    return None, 0.3


def _checked_option(raw: str) -> str | None:
    """For "是☑ 否☐" or "☐是 ☑否": the word beside the ticked box."""
    if not any(mark in raw for mark in _CHECKED) or not any(mark in raw for mark in _UNCHECKED):
        return None
    marks = re.escape(_CHECKED + _UNCHECKED)
    after = re.search(rf"[{re.escape(_CHECKED)}]\s*([^\s{marks}]+)", raw)
    before = re.search(rf"([^\s{marks}]+)\s*[{re.escape(_CHECKED)}]", raw)
    leading_box = raw.strip()[:1] in _CHECKED + _UNCHECKED
    chosen = after if leading_box else before or after
    return chosen.group(1) if chosen else None


def money_value(raw: str) -> Normalised:
    folded = ascii_fold(raw).replace(",", "").replace("，", "")
    found = _NUMBER.search(folded)
    if not found:
        return (None, 1.0) if _blank(folded.strip()) else (None, 0.3)
    amount = float(found.group(0))
    rest = folded[found.end() :].lstrip()
    if rest.startswith("元") or (rest.upper().startswith(("RMB", "CNY", "YUAN")) and amount >= 1000):
        amount /= 10_000  # written in yuan, the field is in 万元
    elif rest.lower().startswith(("k", "千")):
        amount /= 10
    return amount, 0.95


def topic_value(raw: str, topics: tuple[Topic, ...]) -> Normalised:
    value = clean_value(raw)
    if not value:
        return None, 1.0
    if not topics:
        return value, 0.6
    folded = ascii_fold(value)
    by_key = {_code_key(topic.code): topic for topic in topics}
    written_codes = []
    for match in _TOPIC_CODE.finditer(folded):
        letters, numbers = _code_key(match.group(0))
        for key in ((letters, numbers), ("", numbers)):
            if key in by_key:
                return by_key[key].code, 0.97
        written_codes.append(match.group(0).strip())
    named = _topic_by_name(folded, topics)
    if named is not None:
        return named
    if written_codes:
        return written_codes[0], 0.3
    return value, 0.2


def _code_key(code: str) -> tuple[str, tuple[int, ...]]:
    letters = "".join(re.findall(r"[A-Za-z]+", code)).upper()
    numbers = tuple(int(number) for number in re.findall(r"\d+", code))
    return letters, numbers


def _topic_by_name(text: str, topics: tuple[Topic, ...]) -> Normalised | None:
    compact = re.sub(r"\s+", "", text)
    for topic in topics:
        name = re.sub(r"\s+", "", ascii_fold(topic.name))
        if name and (name in compact or (len(compact) >= 4 and compact in name)):
            return topic.code, 0.9
    scored = [(fuzz.partial_ratio(re.sub(r"\s+", "", ascii_fold(t.name)), compact), t) for t in topics]
    best_score, best = max(scored, key=lambda item: item[0])
    if best_score >= 80 and sum(1 for score, _ in scored if score == best_score) == 1:
        return best.code, 0.6
    return None


_BY_KIND: dict[FieldKind, Callable[[str], Normalised]] = {
    "text": text_value,
    "institution": text_value,
    "title": text_value,
    "degree": text_value,
    "date": text_value,
    "name": name_value,
    "email": email_value,
    "phone": phone_value,
    "gender": gender_value,
    "money": money_value,
    "yesno": yesno_value,
}


def normalise(kind: FieldKind, raw: str, spec: FormSpec) -> Normalised:
    if clean_value(raw).casefold() in _WORD_PROMPT_TEXTS:  # Word's prompt is blank, whatever the field
        return None, 1.0
    if kind == "topic":
        return topic_value(raw, spec.topics)
    return _BY_KIND[kind](raw)
