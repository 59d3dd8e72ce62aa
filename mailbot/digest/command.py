"""``mailbot digest``: preview a call's digest for any day, or queue it now and deliver the outbox."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.digest.contents import build_digest
from mailbot.digest.queueing import queue_digest
from mailbot.digest.render import render_digest
from storage import Storage
from storage.digests import digest_mail
from storage.models import OutboxState
from templates import TemplateSet


def add_digest_command(subparsers: Any) -> argparse.ArgumentParser:
    """``mailbot digest --call ID [--date D] (--preview FILE.html | --send)``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "digest", help="preview or send the coordinators' daily digest of a call"
    )
    parser.add_argument("--call", required=True, help="call id")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        help="the digest's day, YYYY-MM-DD (default: today in the [digest] time zone)",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--preview", type=Path, metavar="FILE.html", help="write the HTML here and print the text; send nothing"
    )
    action.add_argument("--send", action="store_true", help="queue the digest now and deliver the outbox")
    return parser


def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    from mailbot.sender import Sender
    from mailbot.worker import worker_name
    from storage.archive import RawArchive
    from storage.db import make_engine

    try:
        call = settings.call_by_id(args.call)
    except KeyError:
        print(f"mailbot digest: no call {args.call!r} in the configuration", file=sys.stderr)
        return 2
    wall_clock = utcnow()
    now = wall_clock  # the moment the digest shows: moved to the end of the day for a past day
    zone = ZoneInfo(settings.digest.timezone)
    today = now.astimezone(zone).date()
    day: date = args.date or today
    if day > today:
        print(f"mailbot digest: {day.isoformat()} has not come yet", file=sys.stderr)
        return 2
    if day < today:
        # the call as it stood at the end of that day, not today's state under that day's title
        now = datetime.combine(day + timedelta(days=1), time(0), zone) - timedelta(microseconds=1)
    templates = TemplateSet(settings.templates.dir)
    engine = make_engine(settings.database_url)
    try:
        store = Storage(engine, RawArchive(settings.archive_dir))  # the caller checked the schema is current
        if args.preview is not None:
            with store.sessions() as session:
                data = build_digest(session, settings, call, day, now)
            subject, text, html = render_digest(data, templates)
            args.preview.write_text(html, encoding="utf-8")
            sys.stdout.write(f"Subject: {subject}\n\n{text}")
            print(f"HTML written to {args.preview}", file=sys.stderr)
            return 0
        outbox_id = queue_digest(store, settings, call, day, now, late=False, templates=templates, queued_at=wall_clock)
        if outbox_id is None:
            print(f"the {day.isoformat()} digest of {call.id} was already queued; delivering the outbox")
        Sender(settings, store, worker_name()).flush()
        with store.sessions() as session:
            mail = digest_mail(session, call.id, day)
            state = mail.state if mail else "missing"
            reply = mail.last_reply if mail else None
        print(f"digest {call.id} {day.isoformat()}: {state}{f' ({reply})' if reply else ''}")
        return 0 if state == OutboxState.SENT else 1
    finally:
        engine.dispose()
