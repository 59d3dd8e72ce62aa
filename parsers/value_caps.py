"""How long a value read from a form may be: each kind's cap, applied when the form is read, so
that no later stage (identity, deciding, exports, answers) ever handles more, and the cut is recorded."""

from __future__ import annotations

import re

from parsers.model import FieldValue

# The longest value of each kind a form may give (characters): anything longer is cut when read, so
# no later stage (identity, deciding, exports, answers) ever handles more, and the cut is recorded.
VALUE_CAPS: dict[str, int] = {
    "name": 500,
    "institution": 500,
    "email": 320,
    "phone": 64,
    "gender": 50,
    "title": 200,
    "degree": 200,
    "topic": 200,
    "money": 100,
    "yesno": 50,
    "date": 100,
    "text": 2000,
}
# characters XML 1.0 cannot hold (Excel's and every other XML export's): stripped when read
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters an XML document (an Excel export) cannot contain."""
    return _NOT_XML.sub("", text)


def capped(kind: str, text: str) -> str:
    """``text`` fit for a value of ``kind``: XML-safe and no longer than its cap."""
    return xml_safe(text[: 2 * VALUE_CAPS[kind]])[: VALUE_CAPS[kind]]


def bounded(name: str, kind: str, found: FieldValue, written: int) -> tuple[FieldValue, str | None]:
    """``found`` (``written`` characters in the form) with value and raw text capped; what was cut, or None."""
    cap = VALUE_CAPS[kind]
    value = found.value
    length = max(written, len(value) if isinstance(value, str) else 0)
    if isinstance(value, str):
        value = capped(kind, value)
    bounded = FieldValue(value, capped(kind, found.raw), found.confidence, found.where)
    if length > cap:
        return bounded, f"{name}: {length} characters cut to the cap of {cap}"
    return bounded, None
