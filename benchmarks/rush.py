"""Deadline rush: the whole bot against a real Dovecot full of last-minute submissions.

    python -m benchmarks.rush [--n 200] [--json FILE] [--workers K] [--mode pool|single|both]
                              [--pdf-share S] [--pdf-forms P] [--steady RATE --seconds S] [--seed SEED]

It makes its own load: N messages to the two configured calls, of the first submissions a share S
(default 0.4) carrying a PDF of 2-15 pages made from the form and the rest a filled-in Word form (P
PDF forms padded with proposal pages and converted once by LibreOffice headless, then reused under
fresh Message-IDs), with revisions, second projects and out-of-office replies mixed in.
``--pdf-share 0`` is the Word-only load, where the bot's own work per message weighs most. The
messages are appended to a throw-away Dovecot with arrival times as INTERNALDATE, then measured
three ways on the same mailbox content:

* the bot with its parser pool (``Worker(settings)``) and in one process (``Worker(settings, inline=True)``),
  each in a fresh process with a fresh SQLite database, by one ``single_pass()``: messages/s, per-stage
  seconds, arrival-to-acknowledgement latency seen by an SMTP sink, peak RSS of the bot process and
  of its parser workers;
* a floor: one bare loop that fetches with imapclient and reads the form with python-docx or
  pdfplumber, nothing else; the bot's time over the floor's says what the bot's own work costs.

``--steady RATE --seconds S`` adds a second scenario on a fresh Dovecot: RATE messages a second for
S seconds while ``run_until_stopped()`` waits in IDLE, reporting arrival-to-acknowledgement latency.

The default N finishes in a few minutes on two cores. The deadline-day load is

    python -m benchmarks.rush --n 2000 --json rush-2000.json --steady 5 --seconds 60

Nothing is asserted: the numbers are for reading (see benchmarks/README.md). The parts: the load
(``rush_load``), the servers (``rush_servers``), the measurements (``rush_measure``) and the figures
(``rush_report``); this module runs the scenarios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import imapclient

from benchmarks.rush_load import DEFAULT_PDF_SHARE, build_load, pdf_forms
from benchmarks.rush_measure import BotRun, attach_latencies, floor, mean_floor, run_bot_isolated
from benchmarks.rush_report import percentile, print_table, summarise
from benchmarks.rush_servers import PASSWORD, PASSWORD_ENV, append_all, rush_config, servers
from mailbot.config import Settings, parse_settings
from mailbot.demo import local_config
from mailbot.worker import Worker


def batch(args: argparse.Namespace, settings: Settings, pdfs: dict[str, list[bytes]]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    load = build_load(settings, args.n, pdfs, rng, timedelta(hours=48), args.pdf_share)
    kinds = Counter(p.kind for p in load)
    print(f"load: {len(load)} messages, " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
    users = sorted({box.user for box in settings.mailbox})
    modes = {"pool": [False], "single": [True], "both": [False, True]}[args.mode]
    runs: list[BotRun] = []
    with servers(users) as (dovecot, sink), tempfile.TemporaryDirectory(prefix="rush-data-") as data_root:
        appended = append_all(dovecot, load, "batch")
        appends_done = time.time()
        time.sleep(0.5)  # Dovecot reaps the appending imap processes: their CPU is not the floor's
        # once before the bot and once after: on a shared machine the speed drifts during an
        # invocation, and a floor measured only at one end would tilt the ratio
        print("running the floor …", flush=True)
        floors = [floor(dovecot, users)]
        for inline in modes:
            data_dir = Path(data_root) / ("single" if inline else "pool")
            config = rush_config(data_dir, dovecot, sink, args.workers, idle=False)
            print(f"running the bot ({'single process' if inline else f'{args.workers} parser workers'}) …")
            run = run_bot_isolated(config, inline, dovecot.pid)
            attach_latencies(run, load, appended, appends_done, sink)
            runs.append(run)
        print("running the floor again …", flush=True)
        floors.append(floor(dovecot, users))
    return summarise(args, load, runs, mean_floor(floors))


def steady(args: argparse.Namespace, settings: Settings, pdfs: dict[str, list[bytes]]) -> dict[str, Any]:
    """RATE messages a second for S seconds into a mailbox the running bot watches with IDLE."""
    rng = random.Random(args.seed + 1)
    count = max(1, round(args.steady * args.seconds))
    load = build_load(settings, count, pdfs, rng, timedelta(minutes=30), args.pdf_share)
    users = sorted({box.user for box in settings.mailbox})
    with servers(users) as (dovecot, sink), tempfile.TemporaryDirectory(prefix="rush-steady-") as data_dir:
        config = rush_config(Path(data_dir), dovecot, sink, args.workers, idle=True)
        bot = Worker(parse_settings(config, "rush configuration"))
        runner = threading.Thread(target=bot.run_until_stopped, name="rush-bot", daemon=True)
        runner.start()
        appended: dict[str, float] = {}
        clients = {user: imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False) for user in users}
        try:
            for client, user in zip(clients.values(), clients, strict=True):
                client.login(user, PASSWORD)
            time.sleep(2.0)  # let the intake threads reach IDLE before the first arrival
            started = time.monotonic()
            for index, planned in enumerate(load):
                time.sleep(max(0.0, started + index / args.steady - time.monotonic()))
                clients[planned.user].append("INBOX", planned.raw, msg_time=planned.arrival)
                appended[planned.message_id] = time.time()
            print(f"  steady: appended {len(load)} in {time.monotonic() - started:.1f} s; waiting for answers …")
            expected = {p.message_id for p in load if p.answered}
            deadline = time.monotonic() + max(60.0, args.seconds)
            while time.monotonic() < deadline and not expected <= sink.arrived.keys():
                time.sleep(0.2)
        finally:
            for client in clients.values():
                client.logout()
            bot.stop()
            runner.join(timeout=90)
            bot.close()
    latencies = [sink.arrived[m] - appended[m] for m in expected if m in sink.arrived]
    return {
        "rate_per_s": args.steady,
        "seconds": args.seconds,
        "messages": len(load),
        "acknowledged": len(latencies),
        "unanswered": len(expected) - len(latencies),
        "p50_latency_s": percentile(latencies, 0.5),
        "p95_latency_s": percentile(latencies, 0.95),
        "max_latency_s": max(latencies, default=float("nan")),
    }


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is between 0 and 1, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="messages in the batch (default 200)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--workers", type=int, default=2, help="parser processes of the pool run (default 2)")
    parser.add_argument("--mode", choices=["pool", "single", "both"], default="both")
    parser.add_argument(
        "--pdf-share",
        type=_share,
        default=DEFAULT_PDF_SHARE,
        help=f"share of first submissions carrying a PDF form (default {DEFAULT_PDF_SHARE}; 0 = Word forms only)",
    )
    parser.add_argument(
        "--pdf-forms",
        type=int,
        default=None,
        help="PDF forms made per call (default: enough that each is sent about three times, as revisions are)",
    )
    parser.add_argument("--steady", type=float, help="messages per second of the steady scenario")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady scenario")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    os.environ[PASSWORD_ENV] = PASSWORD
    settings = parse_settings(
        local_config(Path(tempfile.gettempdir()), ("127.0.0.1", 1), ("127.0.0.1", 1), PASSWORD_ENV),
        "rush configuration",
    )
    # each PDF names one applicant: reused too often, it turns the load into one person's revisions
    if args.pdf_share == 0:
        per_call = 0  # the Word-only load: no LibreOffice run at all
    elif args.pdf_forms is not None:
        per_call = args.pdf_forms
    else:
        per_call = max(4, math.ceil(args.n * args.pdf_share / len(settings.call) / 3))
    pdfs = pdf_forms(list(settings.call), per_call, random.Random(args.seed)) if per_call else {}
    summary = batch(args, settings, pdfs)
    if args.steady:
        print(f"steady scenario: {args.steady}/s for {args.seconds} s …", flush=True)
        summary["steady"] = steady(args, settings, pdfs)
    print_table(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"\nsummary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
