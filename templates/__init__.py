"""Every text a person reads: acknowledgements, digests, reasons. Packaged, and overridable by a folder.

A fund office changes wording by putting a file of the same relative name (``ack/accepted.txt.j2``,
``ack/outcomes.toml``, ``reasons.toml`` …) into the folder named by ``[templates] dir``; that file wins
over the packaged one. TOML files are merged table by table and key by key, so an override may
redefine a single reason, or only the subject of one outcome, and inherit the rest.
"""

from __future__ import annotations

import logging
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

log = logging.getLogger(__name__)

PACKAGE = __name__
Language = Literal["zh", "en"]

# CSI/OSC terminal sequences first (their parameters are printable), then any other ESC pair.
_TERMINAL_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]|\x1b.?"
)
# Bidirectional embeddings, overrides and isolates can make a name read differently from its bytes.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_LINE_BREAKING = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_SPACE_RUN = re.compile(r"\s+")
# Spelled out here rather than with %B, which follows the process locale.
_MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)

_ZONE_NAMES: dict[str, tuple[str, str]] = {
    "Asia/Shanghai": ("北京时间", "Beijing time"),
    "Asia/Chongqing": ("北京时间", "Beijing time"),
    "PRC": ("北京时间", "Beijing time"),
}


def strip_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` without terminal escapes, control characters, bidi overrides and line separators.

    Line-breaking characters become spaces (or ``\\n`` when ``keep_newlines``) so words stay apart.
    """
    if text.isprintable():  # no Cc, Cf, Cs, Co, Cn, Zl, Zp: nothing below would change it
        return text
    text = _TERMINAL_SEQUENCE.sub("", text)
    kept: list[str] = []
    for char in text:
        if char in _LINE_BREAKING:
            kept.append("\n" if keep_newlines and char in "\n\u2028\u2029\x85" else " ")
        elif char == "\t":
            kept.append(" ")
        elif char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(char)
    return "".join(kept)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` cleaned of controls, on one line with single spaces, cut at ``limit`` characters."""
    flat = _SPACE_RUN.sub(" ", strip_controls(text)).strip()
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1].rstrip() + "…"
    return flat


def zone_label(zone: str, language: Language) -> str:
    """How the recipient knows the zone: 北京时间 for China, the IANA name otherwise."""
    names = _ZONE_NAMES.get(zone)
    if names is None:
        return zone
    return names[0] if language == "zh" else names[1]


def local_time(value: datetime, zone: str, language: Language = "zh", *, end_of_day: bool = False) -> str:
    """An aware instant as wall-clock time in ``zone``, with the zone named.

    ``end_of_day`` shows midnight as 24:00 of the previous day, the way calls state deadlines.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"refusing to format a naive datetime {value.isoformat()} as local time")
    local = value.astimezone(ZoneInfo(zone))
    day = local.date()
    clock = f"{local:%H:%M:%S}" if local.second or local.microsecond else f"{local:%H:%M}"
    if end_of_day and local.time() == time(0, 0):
        day -= timedelta(days=1)
        clock = "24:00"
    offset = local.strftime("%z")
    utc = f"UTC{offset[:3]}:{offset[3:]}"
    label = zone_label(zone, language)
    if language == "zh":
        return f"{day.year}年{day.month}月{day.day}日 {clock}（{label}，{utc}）"
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}, {clock} ({label}, {utc})"


def _finalize(value: Any) -> Any:
    """Applied to every ``{{ expression }}``: no control character reaches a body from a variable.

    Markup is left alone: it is text the template author marked safe, not a submitted value.
    """
    if isinstance(value, str) and not isinstance(value, Markup):
        return strip_controls(value, keep_newlines=True)
    return value


@dataclass(frozen=True)
class Reason:
    """Why an attachment could not be read, in words for the applicant."""

    zh: str
    en: str


GENERIC_REASON = Reason(
    zh="附件的格式或内容无法被系统自动识别",
    en="the system could not read the attachment's format or content automatically",
)


class TemplateSet:
    """The Jinja environment over the override folder (first) and the packaged templates (second)."""

    def __init__(self, override_dir: str | Path | None = None) -> None:
        self._packaged = jinja2.PackageLoader(PACKAGE, ".")
        self._override: jinja2.FileSystemLoader | None = None
        self.override_dir = Path(override_dir) if override_dir else None
        if self.override_dir is not None:
            if not self.override_dir.is_dir():
                raise FileNotFoundError(f"template folder {self.override_dir} does not exist")
            self._override = jinja2.FileSystemLoader(self.override_dir)
        loaders: list[jinja2.BaseLoader] = [self._packaged]
        if self._override is not None:
            loaders.insert(0, self._override)
        self.environment = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm", "xml", "html.j2"),
                default_for_string=False,
                default=False,
            ),
            undefined=jinja2.StrictUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.environment.filters["local_zh"] = lambda value, zone, end_of_day=False: local_time(
            value, zone, "zh", end_of_day=end_of_day
        )
        self.environment.filters["local_en"] = lambda value, zone, end_of_day=False: local_time(
            value, zone, "en", end_of_day=end_of_day
        )
        self._tables: dict[str, dict[str, Any]] = {}
        self._from_strings: dict[str, jinja2.Template] = {}
        self._reasons: dict[str, Reason] | None = None

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        return self.environment.get_template(name).render(context)

    def render_string(self, source: str, context: Mapping[str, Any]) -> str:
        """Render a template given as text (a subject line from a TOML table); never autoescaped."""
        template = self._from_strings.get(source)
        if template is None:
            # compiling takes longer than rendering, and the same few subject lines come back
            template = self._from_strings[source] = self.environment.from_string(source)
        return template.render(context)

    def table(self, name: str) -> dict[str, Any]:
        """A TOML file of the set: the packaged tables updated key by key with the override's."""
        if name not in self._tables:
            merged: dict[str, Any] = {}
            for loader in (self._packaged, self._override):
                if loader is None:
                    continue
                try:
                    source, filename, _ = loader.get_source(self.environment, name)
                except jinja2.TemplateNotFound:
                    continue
                try:
                    layer = tomllib.loads(source)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"{filename}: not valid TOML: {exc}") from None
                for key, value in layer.items():
                    below = merged.get(key)
                    merged[key] = {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
            self._tables[name] = merged
        return self._tables[name]

    def reasons(self) -> dict[str, Reason]:
        """The plain-words reasons of ``reasons.toml``; entries without both languages are skipped."""
        if self._reasons is None:
            self._reasons = self._read_reasons()
        return self._reasons

    def _read_reasons(self) -> dict[str, Reason]:
        found: dict[str, Reason] = {}
        for code, entry in self.table("reasons.toml").items():
            if isinstance(entry, dict) and isinstance(entry.get("zh"), str) and isinstance(entry.get("en"), str):
                found[code] = Reason(zh=entry["zh"], en=entry["en"])
            else:
                log.warning("reasons.toml: [%s] needs zh and en strings; using the generic reason", code)
        return found

    def reason(self, code: str | None) -> Reason:
        """The words for ``code``, or a generic reason when the code is unknown or absent."""
        if code is None:
            return GENERIC_REASON
        return self.reasons().get(code, GENERIC_REASON)


@cache
def _packaged_set() -> TemplateSet:
    return TemplateSet()


def reason_sentence(code: str | None, language: Language) -> str:
    """The packaged plain-words reason for ``code`` (generic when unknown), for reviewers' records."""
    reason = _packaged_set().reason(code)
    return reason.zh if language == "zh" else reason.en
