"""Opening a call from its blank form: ``mailbot call new`` writes the ``[[call]]`` block, ``call check`` proves it.

``call new`` finds the form's labels (parsers.form_labels), names each field and its kind, reads
the topic list from the published attachment, and writes a complete block for the admin to
review, checked by the same validation as the rest of the configuration. ``call check`` reads the
blank form with that block (every field must be found, and blank) and any filled samples, and
shows field → label → value, so a wrong label is seen before the first applicant writes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.config import CallSettings, ConfigError, parse_settings
from parsers.documents import read_document
from parsers.errors import CannotRead
from parsers.fields import find_values, label_index
from parsers.form_labels import BlankForm, document_blocks, read_blank_form
from parsers.label_matching import MatchedLabel, match_labels
from parsers.layout import Block, Grid
from parsers.limits import Limits
from parsers.message import read_message
from parsers.model import FieldScalar, FormReading, Unreadable
from parsers.spec import FormSpec, Topic
from parsers.textnorm import clean_value

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


# --- topics -------------------------------------------------------------------------------------

_CODE = r"[A-Za-z]{0,8}[-_]?\d{1,3}(?:\s*[.．]\s*\d{1,3})*"
_CODED_LINE = re.compile(rf"^\s*(?:课题|选题|Topic)?\s*({_CODE})\s*(?:[、.．:：)）]|\s)\s*(\S.*)$", re.IGNORECASE)
_WHOLE_CODE = re.compile(rf"^\s*{_CODE}\s*$")
_HEADING_MARK = re.compile(r"^\s*(?:[一二三四五六七八九十]+[、.．]|方向\s*\d*\s*[:：、]?|Direction\s*\d*\s*[:：.]?)\s*")


def read_topics(path: Path, limits: Limits | None = None) -> list[Topic]:
    """The topic list of a call from its published file: .json, .csv, .xlsx, .txt or .docx."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix == ".json":
        return _json_topics(json.loads(data.decode("utf-8-sig")))
    if suffix == ".csv":
        return _row_topics(list(csv.reader(io.StringIO(data.decode("utf-8-sig")))))
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        return _row_topics(
            [["" if cell is None else str(cell) for cell in row] for row in sheet.iter_rows(values_only=True)]
        )
    if suffix in (".docx", ".doc", ".pdf"):
        return _block_topics(document_blocks(data, path.name, limits or Limits()))
    return _line_topics(data.decode("utf-8-sig", errors="replace").splitlines())


def _json_topics(raw: Any) -> list[Topic]:
    if isinstance(raw, dict) and isinstance(raw.get("directions"), list):
        return [
            Topic(str(topic["code"]), str(topic["name"]), str(direction.get("name", "")))
            for direction in raw["directions"]
            for topic in direction.get("topics", [])
        ]
    items = raw.get("topics", []) if isinstance(raw, dict) else raw
    return [Topic(str(t["code"]), str(t["name"]), str(t.get("direction", ""))) for t in items]


def _row_topics(rows: Sequence[Sequence[str]]) -> list[Topic]:
    """Rows of a sheet: the cell holding a code, the name after it, a direction before it or after the name."""
    topics: list[Topic] = []
    carried = ""  # a direction written once for the rows under it (merged cells)
    for row in rows:
        cells = [clean_value(cell) for cell in row]
        code_at = next((number for number, cell in enumerate(cells) if _WHOLE_CODE.match(cell)), None)
        if code_at is None:
            continue  # a header or a blank row
        rest = [cell for cell in cells[code_at + 1 :] if cell]
        before = [cell for cell in cells[:code_at] if cell]
        if before:
            carried = before[-1]
        if not rest:
            continue
        direction = before[-1] if before else rest[1] if len(rest) > 1 else carried
        topics.append(Topic(_code(cells[code_at]), rest[0], direction))
    return topics


def _block_topics(blocks: list[Block]) -> list[Topic]:
    topics: list[Topic] = []
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Grid):
            rows = [[cell.text for cell in row] for row in block.rows]
            topics.extend(_row_topics(rows))
        else:
            lines.extend(block.text.splitlines())
    return topics or _line_topics(lines)


def _line_topics(lines: Sequence[str]) -> list[Topic]:
    """ "1.1 名称" lines under direction headings; a code others extend ("1" of "1.1") is a direction."""
    entries: list[tuple[str, str, str]] = []  # code, name, heading above it
    heading = ""
    for line in lines:
        text = clean_value(line)
        if not text:
            continue
        coded = _CODED_LINE.match(text)
        if coded and not _HEADING_MARK.match(text):
            entries.append((_code(coded.group(1)), coded.group(2).strip(), heading))
        elif len(text) <= 40:
            heading = _HEADING_MARK.sub("", text).strip()
    codes = [code for code, _, _ in entries]
    directions = {code: name for code, name, _ in entries if any(other.startswith(code + ".") for other in codes)}
    topics = []
    for code, name, above in entries:
        if code in directions:
            continue
        parent = code.rsplit(".", 1)[0] if "." in code else ""
        topics.append(Topic(code, name, directions.get(parent, above)))
    return topics


def _code(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("．", "."))


# --- the block ----------------------------------------------------------------------------------


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


# --- call check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckRow:
    field: str
    kind: str
    label: str | None  # the label found in the blank form, None when none of the field's labels is there
    blank_value: str  # what the blank form holds there ("" when blank, as it must be)
    values: tuple[FieldScalar, ...]  # one per filled sample


@dataclass(frozen=True)
class CheckReport:
    call_id: str
    rows: tuple[CheckRow, ...]
    samples: tuple[str, ...]
    sample_problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(row.label is not None and not row.blank_value for row in self.rows) and not self.sample_problems


def check_call(call: CallSettings, filled: Sequence[Path], limits: Limits | None = None) -> CheckReport:
    """The blank form read with the call's fields (each found, all blank), then every filled sample."""
    if not call.form:
        raise CallSetupError(f'[[call]] {call.id} names no blank form (form = "…"): made by hand, not by call new')
    form_path = Path(call.form)
    limits = limits or Limits()
    spec = call.form_spec
    try:
        blank = read_blank_form(form_path.read_bytes(), form_path.name, limits)
        blocks = document_blocks(form_path.read_bytes(), form_path.name, limits, spec)
    except (OSError, CannotRead) as exc:
        raise CallSetupError(f"{form_path}: cannot read the blank form: {exc}") from None
    index = label_index(spec)
    label_of: dict[str, str] = {}
    for printed in blank.labels:
        named = index.field_of(printed.text)
        if named is not None:
            label_of.setdefault(named, printed.text)
    # every place each field's label pairs with a value: the blank form must leave one of them empty
    # (a team table's column "职称" beside "分工" is a pairing too, but not the field's own slot)
    slots: dict[str, list[str]] = {}
    for found in find_values(blocks, index):
        slots.setdefault(found.field, []).append(found.raw)
    readings: list[FormReading | None] = []
    problems: list[str] = []
    for path in filled:
        reading = _sample_reading(path, spec, limits)
        if isinstance(reading, FormReading):
            readings.append(reading)
        else:
            readings.append(None)
            problems.append(f"{path.name}: {reading.reason if reading is not None else 'not read as this form'}")
    rows = []
    for field in spec.fields:
        raws = slots.get(field.name, [])
        label = label_of.get(field.name) or (field.labels[0] if raws else None)
        filled_in = "" if any(_placeholder(raw) for raw in raws) else clean_value(raws[0]) if raws else ""
        rows.append(
            CheckRow(
                field.name,
                field.kind,
                label,
                filled_in,
                tuple(reading.value(field.name) if reading else None for reading in readings),
            )
        )
    return CheckReport(call.id, tuple(rows), tuple(path.name for path in filled), tuple(problems))


def _sample_reading(path: Path, spec: FormSpec, limits: Limits) -> FormReading | Unreadable | None:
    """A filled sample: a document, or a message (.eml) whose attached form is read."""
    data = path.read_bytes()
    if path.suffix.lower() == ".eml":
        submission = read_message(data, spec, limits)
        return submission.form or submission.unreadable
    return read_document(data, path.name, spec, limits)


def _placeholder(raw: str) -> bool:
    """Room for a value: blank, a placeholder, or tick boxes none of which is ticked."""
    from parsers.form_labels import choices, is_blank

    return is_blank(raw) or (bool(choices(raw)) and not any(mark in raw for mark in "☑☒■√✓✔●◉▣"))


def format_check(report: CheckReport) -> str:
    header = ["field", "kind", "label found", "blank form", *report.samples]
    table = [header]
    for row in report.rows:
        table.append(
            [
                row.field,
                row.kind,
                row.label if row.label is not None else "NOT FOUND",
                row.blank_value or "(blank)",
                *("—" if value is None else str(value) for value in row.values),
            ]
        )
    widths = [max(_width(line[column]) for line in table) for column in range(len(header))]
    lines = ["  ".join(_pad(cell, widths[column]) for column, cell in enumerate(line)).rstrip() for line in table]
    lines.extend(f"problem: {problem}" for problem in report.sample_problems)
    verdict = (
        "OK: every field found in the blank form" if report.ok else "NOT OK: see NOT FOUND, filled blanks, problems"
    )
    return "\n".join([*lines, verdict]) + "\n"


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


# --- the command --------------------------------------------------------------------------------


def add_call_command(commands: Any) -> None:
    call = commands.add_parser("call", help="open a new call from its blank form, and check it")
    actions = call.add_subparsers(dest="call_action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="write a [[call]] block from a blank form (.docx, .pdf, .doc)")
    new.add_argument("--form", type=Path, required=True, metavar="BLANK", help="the blank form as published")
    new.add_argument("--topics", type=Path, metavar="FILE", help="the topic list (.docx, .xlsx, .csv, .txt, .json)")
    new.add_argument("--id", required=True, help="call id, e.g. nsfc-ai-2025 (lower case, digits, dashes)")
    new.add_argument("--name-zh", required=True, help="the call's Chinese name")
    new.add_argument("--name-en", default="", help="the call's English name (default: the Chinese one)")
    new.add_argument("--deadline", required=True, help="last day (2025-10-31) or the first late instant with offset")
    new.add_argument("--opens", help="first day (default: today)")
    new.add_argument("--address", action="append", default=[], help="address applicants write to (repeatable)")
    new.add_argument("--prefix", help="reference prefix (default: from the id, e.g. NSFC25)")
    new.add_argument("--timezone", default="Asia/Shanghai")
    new.add_argument(
        "--required",
        help="comma-separated field names that must be filled (default: title, "
        "applicant, institution, topic, and email or phone)",
    )
    new.add_argument("-o", "--output", type=Path, help="write the block here (default: standard output)")
    check = actions.add_parser("check", help="read the blank form and filled samples with a call's fields")
    check.add_argument("call_id", metavar="ID")
    check.add_argument("filled", nargs="*", type=Path, metavar="FILLED", help="filled-in copies of the form")


def cmd_call(args: Any, load: Any) -> int:
    """``mailbot call new|check``; ``load`` gives the settings (only check and a validating new need them)."""
    import sys

    try:
        if args.call_action == "check":
            report = check_call(load(args).call_by_id(args.call_id), args.filled)
            sys.stdout.write(format_check(report))
            return 0 if report.ok else 1
        zone = args.timezone
        deadline = parse_deadline(args.deadline, zone)
        opens_day = datetime.fromisoformat(args.opens).date() if args.opens else datetime.now(ZoneInfo(zone)).date()
        opens = datetime.combine(opens_day, time(0), ZoneInfo(zone))
        required = tuple(name.strip() for name in args.required.split(",") if name.strip()) if args.required else None
        new = NewCall(
            id=args.id,
            name_zh=args.name_zh,
            name_en=args.name_en,
            deadline=deadline,
            opens=opens,
            addresses=tuple(args.address),
            reference_prefix=args.prefix or default_prefix(args.id, opens_day),
            timezone=zone,
            required=required,
        )
        base = tomllib.loads(Path(args.config).read_text(encoding="utf-8")) if args.config else None
        ask = _ask_on_terminal if sys.stdin.isatty() and sys.stderr.isatty() else None
        block, _call = new_call(new, args.form, args.topics, base, ask)
    except KeyError as exc:
        print(f"mailbot: no call {exc} in the configuration", file=sys.stderr)
        return 2
    except CallSetupError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(block, encoding="utf-8")
        print(f"wrote the [[call]] block of {args.id} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(block)
    return 0


def _ask_on_terminal(names: list[str], default: list[str]) -> tuple[str, ...] | None:
    """Which fields must be filled, asked of the admin at a terminal (Enter keeps the default)."""
    import sys

    print(f"fields found: {', '.join(names)}", file=sys.stderr)
    answer = input(f"required (comma-separated; Enter for {','.join(default)}): ").strip()
    return tuple(name.strip() for name in answer.split(",") if name.strip()) if answer else None
