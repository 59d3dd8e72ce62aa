"""Text from bytes whose charset is absent, unknown or wrong: headers, bodies and file names alike.

Mail from Chinese clients mislabels charsets often (GB2312 text holding GBK characters, UTF-8
declared as GB2312, raw 8-bit bytes in headers), so every decode tries the declared charset's
superset and the usual suspects before falling back to replacement characters.
"""

from __future__ import annotations

import re

_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "windows-936": "gb18030",
    "x-euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "iso-8859-8-i": "iso-8859-8",
}
_CHARSET_NAME = re.compile(r"[a-z0-9][a-z0-9!#$%&'+^_`{}~.:-]*")  # RFC 2978's characters, case folded
_SEVEN_BIT_FIRST = ("iso-2022", "utf-7", "hz", "utf-16", "utf-32")
# tried after UTF-8 and the declared charset, in this order
_FALLBACKS = ("gb18030", "big5hkscs")
_WESTERN = ("cp1252", "latin-1")
_EIGHT_BIT_RUN = re.compile(rb"[\x80-\xff]+")


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Text from bytes whose declared charset may be absent, unknown or wrong."""
    charset = _charset(declared)
    if charset and charset.startswith(_SEVEN_BIT_FIRST):
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    if data.isascii():
        return data.decode("ascii")
    fallbacks = _WESTERN if charset is None and _looks_western(data) else _FALLBACKS
    for candidate in ("utf-8", charset, *fallbacks):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _looks_western(data: bytes) -> bool:
    """Undeclared 8-bit text whose every 8-bit byte stands alone between ASCII ones ("M\xfcller").

    That is a Latin-1 or Windows-1252 letter inside a word. In GBK text the common characters are
    two 8-bit bytes; a lone one is the lead of a rare character, and text made only of those does
    not occur, while GB18030 would turn the Latin letter and the ASCII after it into a CJK character.
    """
    runs = _EIGHT_BIT_RUN.findall(data)
    return bool(runs) and all(len(run) == 1 for run in runs)


def _charset(declared: str | None) -> str | None:
    if not declared:
        return None
    name = declared.strip().strip('"').casefold()
    if not _CHARSET_NAME.fullmatch(name):
        return None  # no charset has such a name, and a NUL in it makes the codec lookup raise ValueError
    return _CHARSET_ALIASES.get(name, name)
