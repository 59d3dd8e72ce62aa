"""The ``mailbot`` command."""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from mailbot import __version__
from mailbot.admin.commands import ADMIN_COMMANDS, add_admin_commands, aware_time
from mailbot.admin.context import EXIT_SCHEMA, SchemaNotCurrent
from mailbot.config import CONFIG_ENV, ConfigError, Settings, load_settings
from mailbot.logs import configure_logging, configured_secrets

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
    imp.add_argument("--arrival", type=aware_time, help="arrival time (default: the newest Received: stamp)")
    imp.add_argument("--mailbox", help="mailbox name to record (default: the call's mailbox)")
    imp.add_argument("--call", help="call id (default: from the recipients)")
    imp.add_argument("--record-only", action="store_true", help="record without deciding or sending")

    add_admin_commands(commands)
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


def require_secrets(settings: Settings) -> None:
    """Every account's secrets are in the environment (passwords, or an OAuth2 client and refresh token)."""
    from mailbot.oauth import Credentials

    credentials = Credentials(settings)
    for box in settings.mailbox:
        credentials.of(box)
    if settings.smtp.password_env or settings.smtp.oauth:
        credentials.of(settings.smtp)


def cmd_run(args: argparse.Namespace) -> int:
    from mailbot.worker import Worker

    settings = _settings(args)
    require_secrets(settings)  # a missing secret is a set-up mistake: say so and stop, do not retry forever
    with Worker(settings, inline=args.inline, digests=True) as worker:
        if args.once:
            summary = worker.single_pass()
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
            worker.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        if settings.metrics.port is not None:
            from mailbot.metrics import MetricsCollector, serve_metrics

            serve_metrics(
                MetricsCollector(worker.store, settings, worker.timings), settings.metrics.host, settings.metrics.port
            )
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
        worker.run_until_stopped()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    # import takes mail in as `run` does (records, decides, answers) and so builds the same Worker,
    # migrating at start: importing an archive into a fresh data directory is how a bot begins
    from mailbot.admin.importer import ImportError_, import_one, messages_at
    from mailbot.progress import progress_reporter
    from mailbot.worker import Worker

    settings = _settings(args)
    failures = 0
    with Worker(settings) as bot:
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
            processed = bot.deciding.decide()
            sent = bot.send()
            print(f"processed: {len(processed)}, sent: {sum(1 for s in sent if s.state == 'sent')}")
    return 1 if failures else 0


COMMANDS = {
    "run": cmd_run,
    "import": cmd_import,
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
        if args.command in ADMIN_COMMANDS:
            return ADMIN_COMMANDS[args.command](args, _settings)
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
