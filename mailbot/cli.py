"""The ``mailbot`` command."""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from mailbot import __version__
from mailbot.admin_context import EXIT_SCHEMA, SchemaNotCurrent
from mailbot.bundle_command import add_bundle_command
from mailbot.call_command import add_call_command
from mailbot.clock import ensure_aware
from mailbot.config import CONFIG_ENV, ConfigError, Settings, load_settings
from mailbot.digest.command import add_digest_command
from mailbot.logs import configure_logging, configured_secrets
from mailbot.queue_command import add_queue_command

log = logging.getLogger("mailbot")

EXIT_CODES = """exit codes:
  0  done; everything checked is fine
  1  done in part, or something needs a person (a failing mailbox, a message not imported,
     a check that did not pass, an unknown queue item)
  2  the command line or the configuration is wrong, e.g. an unknown key or --call, a missing
     secret (nothing was done)
  3  no permission to the data directory or the configuration: run as the service user
  4  the database schema is not the one this mailbot needs: run `mailbot migrate` (admin
     commands never change the schema; `run`, `migrate` and `check --fix` do)
  130 interrupted"""
EXIT_PERMISSION = 3


def permission_sentence(exc: PermissionError) -> str:
    """One sentence: which file could not be used, who owns it, and how to run the command instead."""
    path = Path(exc.filename) if exc.filename else None
    owner = None
    probe = path
    while probe is not None and owner is None:
        try:
            owner = pwd.getpwuid(probe.stat().st_uid).pw_name
        except (OSError, KeyError):
            probe = probe.parent if probe.parent != probe else None
    who = owner or "mailbot"
    me = pwd.getpwuid(os.geteuid()).pw_name if hasattr(os, "geteuid") else "this user"
    return (
        f"mailbot: {me} may not use {path or 'the data directory'} (it belongs to {who}): "
        f"run admin commands as the service user, e.g. `sudo -u {who} mailbot …`"
    )


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2024-09-08T23:59:59+08:00")
    return ensure_aware(value)


def _day_or_time(text: str) -> date | datetime:
    """``2024-05-20`` (a day, placed in the call's zone later) or an ISO time with its offset."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return _aware_time(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbot",
        description="Email intake for research-grant calls.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE", help=f"TOML configuration (default: ${CONFIG_ENV})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="human", choices=["human", "json"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="poll the mailboxes, decide, acknowledge (until stopped)")
    run.add_argument("--once", action="store_true", help="process what is there now, send, and exit")
    run.add_argument("--inline", action="store_true", help="read forms in this process (no worker pool)")

    imp = commands.add_parser("import", help="take .eml files, maildirs or mbox files in as if they had arrived")
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--arrival", type=_aware_time, help="arrival time (default: the newest Received: stamp)")
    imp.add_argument("--mailbox", help="mailbox name to record (default: the call's mailbox)")
    imp.add_argument("--call", help="call id (default: from the recipients)")
    imp.add_argument("--record-only", action="store_true", help="record without deciding or sending")

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
        type=_day_or_time,
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
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    for key, folder in (
        ("[storage] data_dir", settings.data_dir),
        ("[archive] dir", settings.archive_dir),
        ("[queue] dir", settings.queue_dir),
    ):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{key} {folder} is a file, not a folder: name a folder (it is created if missing)")
    return settings


def require_call(settings: Settings, call_id: str | None) -> None:
    known = [call.id for call in settings.call]
    if call_id is not None and call_id not in known:
        raise ConfigError(f"--call {call_id!r} is not a configured call; the calls are: {', '.join(known)}")


def require_secrets(settings: Settings) -> None:
    """Every account's secrets are in the environment (passwords, or an OAuth2 client and refresh token)."""
    from mailbot.oauth import Credentials

    credentials = Credentials(settings)
    for box in settings.mailbox:
        credentials.of(box)
    if settings.smtp.password_env or settings.smtp.oauth:
        credentials.of(settings.smtp)


def cmd_run(args: argparse.Namespace) -> int:
    from mailbot.app import Bot
    from mailbot.scheduling import DigestScheduler

    settings = _settings(args)
    require_secrets(settings)  # a missing secret is a set-up mistake: say so and stop, do not retry forever
    with Bot(settings, inline=args.inline) as bot:
        if args.once:
            summary = bot.run_once()
            outcomes: dict[str, int] = {}
            for item in summary.processed:
                outcomes[item.outcome] = outcomes.get(item.outcome, 0) + 1
            sent = sum(1 for s in summary.sent if s.state == "sent")
            print(
                f"new: {sum(p.new for p in summary.polled)}, processed: {len(summary.processed)} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items())) or 'none'}), sent: {sent}"
            )
            for error in summary.errors:
                print(f"error: {error}", file=sys.stderr)
            return 1 if summary.errors else 0

        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s received: finishing the current step and stopping", signal.Signals(signum).name)
            bot.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        if settings.metrics.port is not None:
            from mailbot.metrics import MetricsCollector, serve_metrics

            serve_metrics(
                MetricsCollector(bot.store, settings, bot.timings), settings.metrics.host, settings.metrics.port
            )
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
        digests = DigestScheduler(settings, bot.store, bot.templates, on_queued=bot.wake_sender)
        bot.run_forever(extra_jobs=[digests.run])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    # import takes mail in as `run` does (records, decides, answers) and so builds the same Bot,
    # migrating at start: importing an archive into a fresh data directory is how a bot begins
    from mailbot.app import Bot
    from mailbot.importer import ImportError_, import_one, messages_at
    from mailbot.progress import progress_reporter

    settings = _settings(args)
    failures = 0
    with Bot(settings) as bot:
        paths: list[Path] = args.paths
        items = [item for path in paths for item in messages_at(path)]
        new = 0
        with progress_reporter("importing", len(items)) as advance:
            for label, raw in items:
                try:
                    recorded = import_one(settings, bot.store, raw, args.mailbox, args.call, args.arrival)
                except (ImportError_, OSError, KeyError) as exc:
                    failures += 1
                    advance(label, f"not imported: {exc}")
                    continue
                new += recorded.new
                advance(label, "recorded" if recorded.new else "already recorded")
        print(f"imported {new} new message(s) of {len(items)}", file=sys.stderr)
        if not args.record_only:
            processed = bot.process()
            sent = bot.send()
            print(f"processed: {len(processed)}, sent: {sum(1 for s in sent if s.state == 'sent')}")
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    from mailbot.admin_context import AdminContext
    from mailbot.export import write_export

    settings = _settings(args)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from mailbot.demo import run_demo

    if args.log_level == "info":  # the demo's own table says what happened; keep the log to problems
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(args.data_dir)


def cmd_parse(args: argparse.Namespace) -> int:
    from mailbot.config import parse_settings
    from mailbot.importer import call_of_recipients
    from parsers.report import parse_files

    if args.config or CONFIG_ENV in os.environ:
        settings = _settings(args)
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
            from mailbot.form_check import labels_report

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


def cmd_check(args: argparse.Namespace) -> int:
    from mailbot.checks import run_checks

    settings = _settings(args)
    if args.fix:
        _report_migration(settings)
    lines = run_checks(settings)
    for line in lines:
        print(line)
    return 0 if all(line.ok for line in lines) else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    _report_migration(_settings(args))
    return 0


def _report_migration(settings: Settings) -> None:
    from mailbot.admin_context import migrate

    before, after = migrate(settings)
    if before == after:
        print(f"the database schema is already current ({after})")
    else:
        print(f"the database schema was at {before or 'nothing (an empty database)'} and is now at {after}")


def cmd_status(args: argparse.Namespace) -> int:
    from mailbot.status import failing_mailboxes, status_report

    settings = _settings(args)
    sys.stdout.write(status_report(settings))
    failing = failing_mailboxes(settings)
    if failing:
        print(f"mailbot: mailbox(es) failing: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import getpass

    from mailbot.admin_context import check_schema
    from mailbot.ops import default_purge_before, purge

    settings = _settings(args)
    require_call(settings, args.call)
    check_schema(settings)
    before = args.before or default_purge_before(settings, args.call)
    if not isinstance(before, datetime):  # a day: from its first moment in the call's time zone
        before = datetime.combine(before, time(0), settings.call_by_id(args.call).tz)
    report = purge(settings, args.call, before, args.dry_run, getpass.getuser())
    print(("would remove: " if args.dry_run else "removed personal data of: ") + str(report))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    from mailbot.admin_context import check_schema
    from mailbot.digest.command import cmd_digest as digest_command

    settings = _settings(args)
    check_schema(settings)  # the digest then finds nothing to migrate
    return digest_command(args, settings)


def cmd_queue(args: argparse.Namespace) -> int:
    from mailbot.queue_command import cmd_queue as run_queue

    return run_queue(args, _settings(args))


def cmd_call(args: argparse.Namespace) -> int:
    from mailbot.call_command import cmd_call as call_command

    return call_command(args, _settings)


def cmd_bundle(args: argparse.Namespace) -> int:
    from mailbot.admin_context import check_schema
    from mailbot.bundle_command import cmd_bundle as bundle_command

    settings = _settings(args)
    check_schema(settings)
    return bundle_command(args, settings)


COMMANDS = {
    "call": cmd_call,
    "bundle": cmd_bundle,
    "check": cmd_check,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "purge": cmd_purge,
    "queue": cmd_queue,
    "digest": cmd_digest,
    "run": cmd_run,
    "import": cmd_import,
    "export": cmd_export,
    "demo": cmd_demo,
    "parse": cmd_parse,
}


GLOBAL_OPTIONS = ("--config", "--log-level", "--log-format")


def globals_first(argv: Sequence[str]) -> list[str]:
    """The global options moved before the command, so ``mailbot status --config FILE`` works too."""
    moved: list[str] = []
    rest: list[str] = []
    items = iter(argv)
    for item in items:
        name = item.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and (rest or moved):
            moved.append(item)
            if "=" not in item:
                moved.append(next(items, ""))
        elif item == "--":
            rest.append(item)
            rest.extend(items)
        else:
            rest.append(item)
    return moved + rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(globals_first(sys.argv[1:] if argv is None else list(argv)))
    # applicants' data: whatever mailbot or its libraries create is for the owner alone
    os.umask(0o077)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.config or args.command not in {"demo", "parse", "call"}:
            settings = None
            try:
                settings = _settings(args)
            except ConfigError:
                if args.command not in {"demo", "parse", "call"}:
                    raise
            if settings is not None:
                configure_logging(args.log_level, args.log_format, configured_secrets(settings.secret_env_names))
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return 2
    except SchemaNotCurrent as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return EXIT_SCHEMA
    except SQLAlchemyError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"mailbot: the database failed: {first_line}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(permission_sentence(exc), file=sys.stderr)
        return EXIT_PERMISSION
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
