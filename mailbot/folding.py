"""How names and institutions are compared across scripts and widths: CJK detection and folding.

Shared by :mod:`mailbot.identity` (names) and :mod:`mailbot.institutions` (institution names).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Any

import opencc

CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_CHAR = re.compile(f"[{CJK}]")
WHITESPACE = re.compile(r"\s+")


@cache
def _to_simplified() -> Any:
    return opencc.OpenCC("t2s")


def simplify(text: str) -> str:
    """NFKC (full-width to ASCII, compatibility ideographs) then traditional to simplified."""
    folded = unicodedata.normalize("NFKC", text)
    return str(_to_simplified().convert(folded))


def has_cjk(text: str) -> bool:
    return CJK_CHAR.search(text) is not None
