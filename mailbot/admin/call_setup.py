"""Opening a call from its blank form: ``mailbot call new`` writes the ``[[call]]`` block, ``call check`` proves it.

``call new`` finds the form's labels (parsers.form_labels), names each field and its kind, reads
the topic list from the published attachment, and writes a complete block for the admin to
review, checked by the same validation as the rest of the configuration. ``call check`` reads the
blank form with that block (every field must be found, and blank) and any filled samples, and
shows field → label → value, so a wrong label is seen before the first applicant writes.

Here: the block and its fields. The topic list is read by :mod:`mailbot.admin.call_topics`, ``call check``
is :mod:`mailbot.admin.call_check`, and the command line :mod:`mailbot.admin.call_command`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.admin.call_topics import read_topics
from mailbot.config import CallSettings, ConfigError, parse_settings
from parsers.errors import CannotRead
from parsers.form_labels import BlankForm, read_blank_form
from parsers.label_matching import MatchedLabel, match_labels
from parsers.spec import Topic

# The fields without which an application cannot be judged: the rules identify a person by them.
DEFAULT_REQUIRED = ("project_title", "applicant_name", "institution", "topic")
CONTACTS = ("email", "phone")


class CallSetupError(Exception):
    """What keeps ``call new`` or ``call check`` from doing its work, said for the admin."""


@dataclass(frozen=True)
class NewCall:
    id: str
    name_zh: str
    name_en: str
    deadline: datetime
    opens: datetime
    addresses: tuple[str, ...]
    reference_prefix: str
    timezone: str = "Asia/Shanghai"
    required: tuple[str, ...] | None = None  # None: the default set, those the form has


def parse_deadline(text: str, zone: str) -> datetime:
    """An ISO time with its offset, or a day: the first instant after that day ends in the call's zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CallSetupError(f"not a date or an ISO 8601 time: {text!r}") from None
    if len(text.strip()) <= 10:  # a day: applications are accepted until the end of it
        return datetime.combine(value.date() + timedelta(days=1), time(0), ZoneInfo(zone))
    if value.tzinfo is None:
        raise CallSetupError(f"{text!r} needs a UTC offset, e.g. 2025-10-31T17:00:00+08:00")
    return value


def default_prefix(call_id: str, opens: date) -> str:
    """ "nsfc-ai-2025" → "NSFC25": the first word of the id and the year's last two digits."""
    words = [word for word in call_id.split("-") if word]
    letters = next((re.sub(r"[^A-Za-z0-9]", "", word).upper() for word in words if not word.isdigit()), "CALL")
    year = next((word[-2:] for word in reversed(words) if word.isdigit() and len(word) == 4), f"{opens.year % 100:02d}")
    return (letters[:8] + year)[:12] if len(letters) >= 2 else f"C{letters}{year}"


def choose_required(
    matched: Sequence[MatchedLabel], required: Sequence[str] | None
) -> tuple[set[str], list[list[str]]]:
    """Which fields are required, and the groups of which one suffices (a contact: email or phone)."""
    names = [item.name for item in matched]
    if required is not None:
        unknown = sorted(set(required) - set(names))
        if unknown:
            raise CallSetupError(f"--required names fields the form does not have: {', '.join(unknown)}")
        return set(required), []
    chosen = {name for name in DEFAULT_REQUIRED if name in names}
    contacts = [name for name in CONTACTS if name in names]
    if len(contacts) == 2:
        return chosen, [contacts]
    return chosen | set(contacts), []


def build_call_block(
    new: NewCall,
    form: BlankForm,
    form_path: Path,
    topics: Sequence[Topic] = (),
) -> str:
    """The ``[[call]]`` block as TOML text, comments saying where each label was found."""
    matched = match_labels(form.labels, form.lists)
    if not matched:
        raise CallSetupError(f"{form_path}: no labels found (is it the blank form, with room left for each value?)")
    required, one_of = choose_required(matched, new.required)
    addresses = new.addresses or form.emails[:1]
    if not addresses:
        raise CallSetupError("give --address: the address applicants send to (the form names none)")
    address = addresses[0]
    out = [
        f"# [[call]] {new.id}: made by `mailbot call new` from {form_path.name}; review it, then run",
        f"# `mailbot call check {new.id}` and add {new.id!r} to the calls of the [[mailbox]] that receives it.",
        "[[call]]",
        f"id = {_s(new.id)}",
        f"name_zh = {_s(new.name_zh)}",
        f"name_en = {_s(new.name_en or new.name_zh)}",
        f"reference_prefix = {_s(new.reference_prefix)}",
        f"addresses = {_list(addresses)}",
        f"opens = {new.opens.isoformat()}",
        f"deadline = {new.deadline.isoformat()}",
        "grace_minutes = 0",
        f"timezone = {_s(new.timezone)}",
        f"coordinators = {_list(addresses[:1])}",
        f"contact = {_s(address)}",
        f"sender = {{ address = {_s(address)}, name = {_s(new.name_zh)} }}",
        f"form = {_s(str(form_path.resolve()))}",
        f"form_title = {_s(form.title)}",
    ]
    if one_of:
        out.append(f"required_one_of = [{', '.join(_list(group) for group in one_of)}]")
    for table in form.lists:
        columns = ", ".join(table.columns)
        out.append(
            f"# a list of {table.rows} rows ({table.caption or 'no caption'}: {columns}) is kept in the document"
        )
    for item in matched:
        out += [
            "",
            f"# {item.label.layout} of {item.label.where.describe()}"
            + ("" if item.known else " — not a field mailbot knows: kept as text"),
            "[[call.field]]",
            f"name = {_s(item.name)}",
            f"kind = {_s(item.kind)}",
        ]
        if item.name in required:
            out.append("required = true")
        out.append(f"labels = {_list(item.labels)}")
    for topic in topics:
        out += ["", "[[call.topic]]", f"code = {_s(topic.code)}", f"name = {_s(topic.name)}"]
        if topic.direction:
            out.append(f"direction = {_s(topic.direction)}")
    return "\n".join(out) + "\n"


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_s(item) for item in items) + "]"


def validate_block(block: str, base: dict[str, Any] | None = None) -> CallSettings:
    """The block read back through the configuration's own checks (beside ``base``'s other calls)."""
    raw: dict[str, Any] = dict(base) if base else {"smtp": {"host": "localhost"}}
    added: list[dict[str, Any]] = tomllib.loads(block)["call"]
    others: list[dict[str, Any]] = list(raw.get("call", []))
    raw["call"] = [call for call in others if call.get("id") != added[0]["id"]] + added
    try:
        settings = parse_settings(raw, "the new [[call]] block")
    except ConfigError as exc:
        raise CallSetupError(str(exc)) from None
    return settings.call_by_id(added[0]["id"])


# asked, when no --required was given, with the fields found and the default choice; None keeps it
AskRequired = Callable[[list[str], list[str]], tuple[str, ...] | None]


def new_call(
    new: NewCall,
    form_path: Path,
    topics_path: Path | None = None,
    base: dict[str, Any] | None = None,
    ask: AskRequired | None = None,
) -> tuple[str, CallSettings]:
    """Read the blank form (and topic list), write the block, and check that it is a valid call."""
    try:
        form = read_blank_form(form_path.read_bytes(), form_path.name)
    except CannotRead as exc:
        raise CallSetupError(f"{form_path}: {exc.reason.reason}: {exc.reason.detail}") from None
    if ask is not None and new.required is None:
        names = [item.name for item in match_labels(form.labels, form.lists)]
        required, one_of = choose_required(match_labels(form.labels, form.lists), None)
        default = [name for name in names if name in required or any(name in group for group in one_of)]
        answer = ask(names, default)
        if answer is not None:
            new = replace(new, required=answer)
    topics = read_topics(topics_path) if topics_path else []
    if topics_path and not topics:
        raise CallSetupError(f"{topics_path}: no topic codes found (lines such as '1.1 名称', or a code column)")
    block = build_call_block(new, form, form_path, topics)
    return block, validate_block(block, base)
