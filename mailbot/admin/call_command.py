"""The ``mailbot call new|check`` command line: its arguments, and what it prints."""

from __future__ import annotations

import tomllib
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.admin.call_check import check_call, format_check
from mailbot.admin.call_setup import CallSetupError, NewCall, default_prefix, new_call, parse_deadline


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
