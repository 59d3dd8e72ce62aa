"""``mailbot bundle``: the command line, and building a bundle from the database to a file or folder."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailbot.admin.bundle import CURRENT_OUTCOMES, Bundle, Grouping, collect
from mailbot.admin.bundle_index import write_bundle
from mailbot.config import Settings
from storage.archive import RawArchive
from templates import TemplateSet


def _progress_reporter() -> tuple[Callable[[str], None], Callable[[], None]]:
    if not sys.stderr.isatty():
        return (lambda text: print(text, file=sys.stderr, flush=True)), (lambda: None)
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)  # standard output keeps the summary
    bar.start()
    task = bar.add_task("bundle", total=None)

    def advance(text: str) -> None:
        done, _, total = text.strip("[").partition("]")[0].partition("/")
        bar.update(task, completed=int(done), total=int(total), description=text.partition("] ")[2])

    return advance, bar.stop


def build(
    settings: Settings,
    call_id: str,
    output: Path,
    grouping: Grouping = "topic",
    redact: bool = False,
    pdf: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    from storage.db import make_engine, session_factory

    call = settings.call_by_id(call_id)
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            bundle = collect(
                session,
                RawArchive(settings.archive_dir),
                call,
                TemplateSet(settings.templates.dir),
                grouping,
                redact,
                pdf,
                progress=progress,
            )
    finally:
        engine.dispose()
    write_bundle(bundle, output)
    return bundle


def add_bundle_command(commands: Any) -> None:
    bundle = commands.add_parser("bundle", help="every current proposal of a call, for reviewers (zip or folder)")
    bundle.add_argument("--call", required=True)
    bundle.add_argument("-o", "--output", type=Path, help="FILE.zip or a folder (default: CALL-bundle.zip)")
    bundle.add_argument("--redact", action="store_true", help="leave contacts and personal fields out of the index")
    bundle.add_argument("--by", choices=["topic", "direction", "none"], default="topic", help="folders by")
    bundle.add_argument("--pdf", action="store_true", help="add a PDF rendering of each Word form (LibreOffice)")


def cmd_bundle(args: Any, settings: Settings) -> int:
    output: Path = args.output or Path(f"{args.call}-bundle.zip")
    advance, finish = _progress_reporter()
    try:
        made = build(settings, args.call, output, args.by, args.redact, args.pdf, advance)
    except KeyError:
        print(f"mailbot: no call {args.call!r} in the configuration", file=sys.stderr)
        return 2
    finally:
        finish()
    for note in made.notes:
        print(note, file=sys.stderr)
    current = sum(1 for entry in made.entries if entry.status in CURRENT_OUTCOMES)
    print(
        f"{output}: {current} application(s), {len(made.entries) - current} late or unreadable, "
        f"{len(made.superseded)} superseded version(s) left out, {len(made.files)} files"
    )
    return 0
