"""The admin commands of ``mailbot``: their arguments and what each one runs.

``export``, ``demo``, ``check``, ``migrate``, ``status``, ``purge``, ``queue``, ``digest``, ``call``,
``bundle`` and ``parse``; ``run`` and ``import``, which take mail in, are in :mod:`mailbot.cli`,
which also loads the configuration (``settings_of``) and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path

from mailbot.admin.bundle_command import add_bundle_command
from mailbot.admin.call_command import add_call_command
from mailbot.admin.queue_command import add_queue_command
from mailbot.clock import ensure_aware
from mailbot.config import CONFIG_ENV, ConfigError, Settings
from mailbot.digest.command import add_digest_command

SettingsLoader = Callable[[argparse.Namespace], Settings]


def aware_time(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (``import --arrival``, ``purge --before``)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2024-09-08T23:59:59+08:00")
    return ensure_aware(value)


def day_or_time(text: str) -> date | datetime:
    """``2024-05-20`` (a day, placed in the call's zone later) or an ISO time with its offset."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return aware_time(text)


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The admin commands' arguments, in the order ``mailbot --help`` lists them."""
    exp = commands.add_parser("export", help="one record per processed message")
    exp.add_argument("--format", choices=["json", "csv", "xlsx"], default="json")
    exp.add_argument("--call", help="only this call")
    exp.add_argument("--redact", action="store_true", help="leave out contact fields (email, phone, sender)")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")

    demo = commands.add_parser("demo", help="run the whole pipeline on sample mail with embedded servers")
    demo.add_argument("--data-dir", type=Path, default=Path("mailbot-demo"), help="where the demo keeps its data")

    check = commands.add_parser("check", help="check configuration, secrets, mailboxes, SMTP, database and disk")
    check.add_argument("--fix", action="store_true", help="bring the database schema up to date first")
    commands.add_parser("migrate", help="bring the database schema up to date (creates it in an empty database)")
    commands.add_parser("status", help="how the bot is doing: polls, backlog, outbox, queue, digests")
    purge = commands.add_parser("purge", help="remove personal data of a closed call (PIPL/GDPR retention)")
    purge.add_argument("--call", required=True)
    purge.add_argument(
        "--before",
        type=day_or_time,
        help="arrived before: a date (midnight in the call's time zone) or a time with its UTC offset "
        "(default: now - retention_days)",
    )
    purge.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")
    add_queue_command(commands)
    add_digest_command(commands)
    add_call_command(commands)
    add_bundle_command(commands)

    parse = commands.add_parser("parse", help="read .eml, .docx, .pdf or .zip files and show the fields")
    parse.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parse.add_argument("--call", help="call whose form to read (default: from an .eml's recipients, else the first)")
    parse.add_argument("--json", action="store_true", help="machine-readable output")


def require_call(settings: Settings, call_id: str | None) -> None:
    known = [call.id for call in settings.call]
    if call_id is not None and call_id not in known:
        raise ConfigError(f"--call {call_id!r} is not a configured call; the calls are: {', '.join(known)}")


def cmd_export(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.context import AdminContext
    from mailbot.export import write_export

    settings = settings_of(args)
    require_call(settings, args.call)  # an unknown call is a mistake, not an empty export
    if args.output is None and args.format == "xlsx":
        print("mailbot: an xlsx export needs -o FILE", file=sys.stderr)
        return 2
    with AdminContext(settings) as admin, admin.store.sessions() as session:
        data = write_export(session, args.format, args.call, args.redact, args.output, settings)
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)  # as written to a file: the CSV keeps its byte-order mark for Excel
        sys.stdout.buffer.flush()
    return 0


def cmd_demo(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.demo import run_demo

    if args.log_level == "info":  # the demo's own table says what happened; keep the log to problems
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(args.data_dir)


def cmd_parse(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.importer import call_of_recipients
    from mailbot.config import parse_settings
    from parsers.report import parse_files

    if args.config or CONFIG_ENV in os.environ:
        settings = settings_of(args)
    else:
        import tomllib

        from mailbot.config import example_config_text

        settings = parse_settings(tomllib.loads(example_config_text()), "the example configuration")
    require_call(settings, args.call)
    all_ok = True
    outputs: list[str] = []
    for path in args.files:
        call_id = args.call
        if call_id is None and path.suffix.casefold() == ".eml" and path.is_file():
            call_id = call_of_recipients(settings, path.read_bytes())  # as `import` and intake do
        call = settings.call_by_id(call_id) if call_id else settings.call[0]
        text, ok = parse_files([path], call.form_spec, as_json=args.json)
        if not ok and not args.json:
            from mailbot.admin.form_check import labels_report

            text += labels_report(path, call)
        outputs.append(text)
        all_ok = all_ok and ok
    if args.json:
        import json

        sys.stdout.write(
            json.dumps([item for text in outputs for item in json.loads(text)], ensure_ascii=False, indent=2) + "\n"
        )
    else:
        sys.stdout.write("\n".join(outputs))
    return 0 if all_ok else 1


def cmd_check(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.checks import run_checks

    settings = settings_of(args)
    if args.fix:
        report_migration(settings)
    lines = run_checks(settings)
    for line in lines:
        print(line)
    return 0 if all(line.ok for line in lines) else 1


def cmd_migrate(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    report_migration(settings_of(args))
    return 0


def report_migration(settings: Settings) -> None:
    from mailbot.admin.context import migrate

    before, after = migrate(settings)
    if before == after:
        print(f"the database schema is already current ({after})")
    else:
        print(f"the database schema was at {before or 'nothing (an empty database)'} and is now at {after}")


def cmd_status(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.status import failing_mailboxes, status_report

    settings = settings_of(args)
    sys.stdout.write(status_report(settings))
    failing = failing_mailboxes(settings)
    if failing:
        print(f"mailbot: mailbox(es) failing: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


def cmd_purge(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    import getpass

    from mailbot.admin.context import check_schema
    from mailbot.admin.purge import default_purge_before, purge

    settings = settings_of(args)
    require_call(settings, args.call)
    check_schema(settings)
    before = args.before or default_purge_before(settings, args.call)
    if not isinstance(before, datetime):  # a day: from its first moment in the call's time zone
        before = datetime.combine(before, time(0), settings.call_by_id(args.call).tz)
    report = purge(settings, args.call, before, args.dry_run, getpass.getuser())
    print(("would remove: " if args.dry_run else "removed personal data of: ") + str(report))
    return 0


def cmd_digest(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.context import check_schema
    from mailbot.digest.command import cmd_digest as digest_command

    settings = settings_of(args)
    check_schema(settings)  # the digest then finds nothing to migrate
    return digest_command(args, settings)


def cmd_queue(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.queue_command import cmd_queue as run_queue

    return run_queue(args, settings_of(args))


def cmd_call(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.call_command import cmd_call as call_command

    return call_command(args, settings_of)


def cmd_bundle(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    from mailbot.admin.bundle_command import cmd_bundle as bundle_command
    from mailbot.admin.context import check_schema

    settings = settings_of(args)
    check_schema(settings)
    return bundle_command(args, settings)


ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace, SettingsLoader], int]] = {
    "call": cmd_call,
    "bundle": cmd_bundle,
    "check": cmd_check,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "purge": cmd_purge,
    "queue": cmd_queue,
    "digest": cmd_digest,
    "export": cmd_export,
    "demo": cmd_demo,
    "parse": cmd_parse,
}
