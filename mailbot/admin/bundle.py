"""``mailbot bundle``: every current proposal of a call, ready to hand to reviewers.

One entry per current application: the latest on-time form of it (the accepted one, or the last
revision) and the other files sent with that form, named ``REFERENCE_姓名_单位.ext`` and grouped
by topic. Superseded versions stay out and are listed in the index; a duplicate is included as
the further project it is, and flagged; late and unreadable mail sits in folders of its own for
the coordinators to decide on. ``index.xlsx`` has a row per entry and ``MANIFEST.sha256`` the
checksum of every file (both written by :mod:`mailbot.admin.bundle_index`). Built from the database and
the raw archive alone, in a fixed order with fixed timestamps, so the same data gives the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from mailbot.admin.bundle_index import index_workbook, local_text
from mailbot.config import CallSettings
from parsers.archive_zip import read_zip
from parsers.convert import convert_many, office_binary, reproducible_pdf
from parsers.errors import CannotRead
from parsers.limits import Limits
from parsers.message import extract_parts
from storage.archive import RawArchive
from storage.exports import messages_with_outcomes
from storage.models import Message
from templates import TemplateSet

Grouping = Literal["topic", "direction", "none"]
CURRENT_OUTCOMES = ("accepted", "incomplete", "revision", "duplicate")
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED = re.compile(r"^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?$", re.IGNORECASE)
_NAME_BYTES = 150  # a path component, with room for the folder and a numbering suffix


@dataclass
class BundleFile:
    path: str  # inside the bundle, "/"-separated
    data: bytes


@dataclass
class Entry:
    folder: str
    reference: str  # the application's (its first form's) reference
    form_reference: str  # the reference of the message whose form is included
    status: str
    fields: dict[str, Any]
    arrival: datetime
    files: list[str] = field(default_factory=list)
    form_sha256: str = ""
    flags: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


@dataclass
class Bundle:
    files: list[BundleFile]
    entries: list[Entry]
    superseded: list[dict[str, Any]]
    notes: list[str]


def safe_component(text: str, fallback: str = "_") -> str:
    """One part of a file name, valid on Windows, macOS and Linux: no separators, reserved words or dots at the end."""
    text = unicodedata.normalize("NFC", text)
    text = _WINDOWS_FORBIDDEN.sub("", "".join(c for c in text if unicodedata.category(c)[0] != "C"))
    text = re.sub(r"\s+", "-", text.strip()).strip(". -")
    while len(text.encode("utf-8")) > _NAME_BYTES:
        text = text[:-1]
    text = text.rstrip(". -")
    if not text or _WINDOWS_RESERVED.match(text):
        text = f"{fallback}{text}" if text else fallback
    return text


def _extension(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    ext = re.sub(r"[^A-Za-z0-9]", "", ext)[:8].lower()
    return f".{ext}" if dot and stem and ext else ""


class _Names:
    """Names in one folder, none equal to another ignoring case (a Windows share's view)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim(self, folder: str, stem: str, extension: str) -> str:
        candidate, number = f"{stem}{extension}", 1
        while f"{folder}/{candidate}".casefold() in self.taken:
            number += 1
            candidate = f"{stem}-{number}{extension}"
        self.taken.add(f"{folder}/{candidate}".casefold())
        return f"{folder}/{candidate}" if folder else candidate


def _reading_form(message: Message) -> dict[str, Any]:
    return dict((message.reading or {}).get("form") or {})


def _values(message: Message) -> dict[str, Any]:
    fields = _reading_form(message).get("fields") or {}
    return {name: (found or {}).get("value") for name, found in fields.items()}


def _parts(archive: RawArchive, message: Message, limits: Limits) -> list[tuple[str, tuple[str, ...], str, bytes]]:
    """(filename, MIME path, sha256, bytes) of each attachment as sent; a form inside a .zip is added."""
    raw = archive.path_for(message.sha256).read_bytes()
    found = [(a.filename, a.path, a.sha256, data) for a, data in extract_parts(raw, limits)]
    form = next((a for a in (message.reading or {}).get("attachments", []) if a.get("role") == "form"), None)
    if form is not None and len(form.get("path") or []) > 1:
        container = next((item for item in found if list(item[1]) == list(form["path"][:-1])), None)
        if container is not None:
            try:
                members = read_zip(container[3], container[0], limits)
            except CannotRead:
                members = []
            for member in members:
                if member.data is not None and member.stored_name == form["path"][-1]:
                    found.append((member.name, tuple(form["path"]), form["sha256"], member.data))
    return found


def collect(
    session: Session,
    archive: RawArchive,
    call: CallSettings,
    templates: TemplateSet,
    grouping: Grouping = "topic",
    redact: bool = False,
    pdf: bool = False,
    limits: Limits | None = None,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Every file and index row of the bundle, from the database and the archive."""
    limits = limits or Limits()
    words = templates.table("bundle/bundle.toml")
    messages = messages_with_outcomes(session, call.id, (*CURRENT_OUTCOMES, "late", "unreadable"))
    flag_names = templates.table("digest/digest.toml").get("flags", {})
    chosen, superseded = _current_entries(messages, call, words, grouping, flag_names)
    chosen += _set_aside_entries(messages, words)
    chosen.sort(key=lambda item: (item[0].reference, item[0].form_reference))

    notes: list[str] = []
    office = office_binary() if pdf else None
    if pdf and office is None:
        notes.append(words["flags"]["pdf_missing"])
    names = _Names()
    files: list[BundleFile] = []
    renderings: list[_Rendering] = []
    for number, (entry, message) in enumerate(chosen, start=1):
        if progress is not None:
            progress(f"[{number}/{len(chosen)}] {entry.reference}")
        files += _entry_files(entry, message, archive, names, words["flags"], limits, renderings if office else None)
    files += _rendered(renderings, words["flags"]["pdf_failed"], limits, progress)
    entries = [entry for entry, _ in chosen]
    index = index_workbook(entries, superseded, call, words, grouping, redact, notes, messages)
    files.append(BundleFile("index.xlsx", index))
    files.sort(key=lambda item: item.path)
    manifest = "".join(f"{hashlib.sha256(item.data).hexdigest()}  {item.path}\n" for item in files)
    files.append(BundleFile("MANIFEST.sha256", manifest.encode("utf-8")))
    files.sort(key=lambda item: item.path)
    return Bundle(files, entries, superseded, notes)


def _current_entries(
    messages: Sequence[Message],
    call: CallSettings,
    words: dict[str, Any],
    grouping: Grouping,
    flag_names: dict[str, Any],
) -> tuple[list[tuple[Entry, Message]], list[dict[str, Any]]]:
    """An entry per application with its latest on-time form, and the versions that form replaced."""
    flag_words = words["flags"]
    topics = {topic.code: topic for topic in call.topic}
    reference_of_key = {m.message_key: m.reference or "" for m in messages}
    by_application: dict[int, list[Message]] = {}
    for message in messages:
        if message.outcome in CURRENT_OUTCOMES and message.application_id is not None:
            by_application.setdefault(message.application_id, []).append(message)
    chosen: list[tuple[Entry, Message]] = []
    superseded: list[dict[str, Any]] = []
    for versions in by_application.values():
        first, current = versions[0], versions[-1]
        entry = Entry(
            folder="",
            reference=first.reference or "",
            form_reference=current.reference or "",
            status=first.outcome or "",
            fields=_values(current),
            arrival=current.arrival,
        )
        if first.outcome == "duplicate":
            original = reference_of_key.get(first.duplicate_of_key or "", "")
            entry.flags.append(flag_words["duplicate"].format(reference=original))
        missing = list((current.decision or {}).get("missing") or [])
        if missing:
            entry.flags.append(flag_words["incomplete"].format(missing=", ".join(missing)))
        for code in (current.decision or {}).get("flags") or []:
            named = flag_names.get(str(code))
            entry.flags.append(f"{named['zh']} / {named['en']}" if isinstance(named, dict) else str(code))
        for old in versions[:-1]:
            entry.superseded.append(old.reference or "")
            superseded.append(
                {
                    "reference": old.reference,
                    "replaced_by": current.reference,
                    "application": entry.reference,
                    "arrival": local_text(old.arrival, call),
                    "sha256": _reading_form(old).get("sha256") or "",
                    "note": flag_words["superseded"].format(reference=current.reference),
                }
            )
        entry.folder = _group_folder(entry.fields.get("topic"), grouping, topics, words["folders"])
        chosen.append((entry, current))
    return chosen, superseded


def _set_aside_entries(messages: Sequence[Message], words: dict[str, Any]) -> list[tuple[Entry, Message]]:
    """Late, unreadable and held mail, each message an entry in its own folder, for the coordinators."""
    folders, flag_words = words["folders"], words["flags"]
    found: list[tuple[Entry, Message]] = []
    for message in messages:
        reference = message.reference or ""
        if message.outcome == "late":
            flags = [flag_words["late"]]
            entry = Entry(folders["late"], reference, reference, "late", _values(message), message.arrival, flags=flags)
        elif message.outcome == "unreadable":
            flags = [flag_words["unreadable"].format(reason=message.reason or "")]
            entry = Entry(folders["unreadable"], reference, reference, "unreadable", {}, message.arrival, flags=flags)
        elif message.outcome in CURRENT_OUTCOMES and message.application_id is None:
            # decided but held in the review queue (a form from an address not the applicant's, say):
            # not part of its application until an admin confirms it
            flags = [flag_words["held"]]
            entry = Entry(folders["held"], reference, reference, "held", _values(message), message.arrival, flags=flags)
        else:
            continue
        found.append((entry, message))
    return found


@dataclass(frozen=True)
class _Rendering:
    """A Word form to render as PDF, under a name claimed beside it."""

    entry: Entry
    message: Message
    form_name: str
    pdf_name: str
    data: bytes
    extension: str
    filename: str


def _rendered(
    renderings: Sequence[_Rendering], failed_flag: str, limits: Limits, progress: Callable[[str], None] | None
) -> list[BundleFile]:
    """The PDF of each form, converted in batches (LibreOffice starts once per batch, not per form);
    each listed right after its form, or its entry flagged where it could not be made."""
    if progress is not None and renderings:
        progress(f"rendering {len(renderings)} form(s) as PDF …")
    documents = [(item.data, item.extension, item.filename) for item in renderings]
    files: list[BundleFile] = []
    for item, converted in zip(renderings, convert_many(documents, "pdf", limits.convert_timeout_s), strict=True):
        if isinstance(converted, CannotRead):
            item.entry.flags.append(failed_flag)
            continue
        files.append(BundleFile(item.pdf_name, reproducible_pdf(converted, item.message.arrival)))
        item.entry.files.insert(item.entry.files.index(item.form_name) + 1, item.pdf_name)
    return files


def _entry_files(
    entry: Entry,
    message: Message,
    archive: RawArchive,
    names: _Names,
    flag_words: dict[str, str],
    limits: Limits,
    renderings: list[_Rendering] | None,
) -> list[BundleFile]:
    """The entry's form first (named after it), then the other files sent with it; with
    ``renderings`` (asked for PDFs), its Word form is added there to be rendered."""
    if not archive.path_for(message.sha256).is_file():
        entry.flags.append(flag_words["not_archived"])  # purged, or an archive restored without it
        return []
    stem = _entry_stem(entry, message)
    form_sha = _reading_form(message).get("sha256") or ""
    parts = _parts(archive, message, limits)
    form_part = next((part for part in parts if part[2] == form_sha), None) if form_sha else None
    others = [part for part in parts if part is not form_part]
    files: list[BundleFile] = []
    for part in ([form_part] if form_part else []) + others:
        filename, _path, digest, data = part
        extension = _extension(filename)
        if part is form_part:
            name = names.claim(entry.folder, stem, extension)
            entry.form_sha256 = digest
        else:
            original = safe_component(filename.rpartition(".")[0] or filename, "file")
            name = names.claim(entry.folder, f"{stem}_{original}", extension)
        files.append(BundleFile(name, data))
        entry.files.append(name)
        if part is form_part and renderings is not None and extension in (".docx", ".doc"):
            # its name is claimed now, beside its form's, so that names do not depend on which renderings fail
            pdf_name = names.claim(entry.folder, stem, ".pdf")
            renderings.append(_Rendering(entry, message, name, pdf_name, data, extension[1:], filename))
    return files


def _entry_stem(entry: Entry, message: Message) -> str:
    name = str(entry.fields.get("applicant_name") or "")
    institution = str(entry.fields.get("institution") or "")
    parts = [safe_component(entry.reference or message.sha256[:12], "entry")]
    parts += [safe_component(text) for text in (name, institution) if safe_component(text, "")]
    stem = "_".join(parts)
    while len(stem.encode("utf-8")) > _NAME_BYTES:
        stem = stem[:-1]
    return stem.rstrip(". -_")


def _group_folder(topic: Any, grouping: Grouping, topics: dict[str, Any], folders: dict[str, str]) -> str:
    if grouping == "none":
        return folders["all"]
    known = topics.get(str(topic)) if topic is not None else None
    if grouping == "direction":
        return safe_component(known.direction) if known is not None and known.direction else folders["no_direction"]
    if known is not None:
        return safe_component(f"{known.code} {known.name}")
    return safe_component(str(topic)) if topic else folders["no_topic"]
