"""Text clean-up shared by every reader: CJK-aware whitespace, label hints, comparison keys."""

from __future__ import annotations

import re
import unicodedata

# Parenthesised hints that forms put beside a label; the words inside are a closed vocabulary so
# that a unit such as "（万元）", which is part of the label, stays.
_HINT_WORDS = "必填|选填|可选|必须填写|如有|如无可不填|签字|签名|盖章|手写|required|optional|mandatory|signature|sign"
_HINT = re.compile(rf"[（(\[【]\s*(?:{_HINT_WORDS})\s*[)）\]】]", re.IGNORECASE)
_MARKS = re.compile(r"[*＊※★☆•●▲◆✱✲✳]")
_LABEL_EDGE = re.compile(r"^[\s:：;；,，、.。\-—_]+|[\s:：;；,，、.。\-—_]+$")
_SPACE_RUN = re.compile(r"\s+")
_ANY_SPACE = re.compile(r"\s+")


def is_cjk(char: str) -> bool:
    """Ideographs, kana/hangul and the CJK punctuation and full-width forms around them."""
    code = ord(char)
    return (
        0x3000 < code <= 0x30FF  # CJK symbols and punctuation, kana (U+3000 itself is a space)
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFE30 <= code <= 0xFE4F
        or 0xFF01 <= code <= 0xFF0F  # full-width punctuation, not the full-width letters and digits
        or 0xFF1A <= code <= 0xFF20
        or 0xFF3B <= code <= 0xFF40
        or 0xFF5B <= code <= 0xFF65
        or 0x20000 <= code <= 0x2FA1F
    )


def has_cjk(text: str) -> bool:
    return any(is_cjk(char) for char in text)


def clean_value(text: str) -> str:
    """Trimmed; whitespace between two CJK characters dropped; any other whitespace run one space."""
    text = text.replace("\u200b", "").replace("\ufeff", "")
    pieces: list[str] = []
    last = 0
    for match in _SPACE_RUN.finditer(text):
        start, end = match.span()
        pieces.append(text[last:start])
        before = text[start - 1] if start > 0 else ""
        after = text[end] if end < len(text) else ""
        if not (before and after and is_cjk(before) and is_cjk(after)):
            pieces.append(" ")
        last = end
    pieces.append(text[last:])
    return "".join(pieces).strip()


def join_wrapped_lines(text: str) -> str:
    """Lines broken by a layout engine (PDF cells): a break next to a CJK character is no space."""
    lines = [line.strip() for line in text.splitlines()]
    joined = ""
    for line in lines:
        if not line:
            continue
        if joined and not (is_cjk(joined[-1]) or is_cjk(line[0])):
            joined += " "
        joined += line
    return joined


def strip_hints(text: str) -> str:
    """A label without "（必填）", "*" marks and the colons or dots around it."""
    text = _HINT.sub("", unicodedata.normalize("NFKC", text))
    text = _MARKS.sub("", text)
    return _LABEL_EDGE.sub("", text)


def label_key(text: str) -> str:
    """The form in which a cell's text is compared with a configured label."""
    return _ANY_SPACE.sub("", strip_hints(text)).casefold()


def ascii_fold(text: str) -> str:
    """Full-width digits, Latin letters and symbols as ASCII (NFKC), for emails, phones and numbers."""
    return unicodedata.normalize("NFKC", text)


def safe_text(text: str) -> str:
    """``text`` without control characters (tabs and line breaks become spaces), NFC."""
    kept = []
    for char in unicodedata.normalize("NFC", text):
        category = unicodedata.category(char)
        if char in "\t\n\r":
            kept.append(" ")
        elif category in ("Cc", "Cs", "Cf") and char not in "\u200d":
            continue
        else:
            kept.append(char)
    return "".join(kept)


def safe_filename(name: str, fallback: str) -> str:
    """A file name fit to show and to save: NFC, no control characters, no path, bounded length."""
    cleaned = safe_text(name).replace("/", "_").replace("\\", "_").strip().lstrip(".").strip()
    cleaned = re.sub(r"\s+", " ", cleaned)
    if len(cleaned) > 180:
        stem, dot, extension = cleaned.rpartition(".")
        cleaned = stem[:170] + dot + extension[:9] if dot and len(extension) <= 9 else cleaned[:180]
    return cleaned or fallback
