"""Deciding and storing alone: the bot's own cost per message, without servers or parsing.

    python -m benchmarks.decisions [--n N] [--seed S] [--database URL] [--json FILE] [--profile FILE]

N messages of the rush load (``.docx`` forms only: nothing here needs LibreOffice) are imported
into a fresh database and read in this process first; then only ``MessageDecider.decide_and_store``
runs for each, in arrival order, as a batch run would. That is the part of a rush that must run
one message at a time (decisions depend on the ones before them), so its time per message bounds
how fast the whole bot can go however many parser workers it has. The figure is steadier than the
rush's wall time, which on a shared machine drifts by a quarter within one invocation: compare
changes by this first, then confirm them with ``benchmarks.rush``.

``--database`` takes an empty database (e.g. a PostgreSQL one made for the purpose; it is refused
if it has tables, and keeps the benchmark's afterwards); by default a SQLite file in a temporary
directory. ``--profile FILE`` writes a cProfile of the timed part (open it with
``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect

from benchmarks.rush_load import build_load
from benchmarks.rush_servers import RUSH_CAPS
from mailbot.admin.importer import import_one
from mailbot.config import parse_settings
from mailbot.deciding import MessageDecider
from mailbot.demo import local_config
from mailbot.worker import Worker
from parsers.model import Submission

UNUSED_SERVER = ("127.0.0.1", 9)  # nothing is fetched or sent


def _progress(done: int, total: int, what: str) -> None:
    if done % 100 == 0 or done == total:
        print(f"\r  {what} {done}/{total}    ", end="", file=sys.stderr, flush=True)


def decide_all(decider: MessageDecider, readings: Sequence[tuple[int, Submission]]) -> Counter[str]:
    return Counter(decider.decide_and_store(pk, submission).outcome for pk, submission in readings)


def measure(n: int, seed: int, database_url: str | None, profile: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mailbot-decisions-") as workdir:
        data_dir = Path(workdir)
        raw = local_config(
            data_dir, UNUSED_SERVER, UNUSED_SERVER, "MAILBOT_BENCH_UNUSED", database_url, security=RUSH_CAPS
        )
        settings = parse_settings(raw, "decisions benchmark")
        load = build_load(settings, n, {}, random.Random(seed), timedelta(hours=48))
        with Worker(settings, inline=True) as bot:
            for index, planned in enumerate(load, start=1):
                import_one(settings, bot.store, planned.raw, None, None, planned.arrival)
                _progress(index, len(load), "imported")
            claimed = bot.store.to_decide.claim(bot.name, n)
            readings: list[tuple[int, Submission]] = []
            for index, pk in enumerate(claimed, start=1):
                readings.append((pk, bot.pipeline.readings.start_reading(pk).result()))
                _progress(index, len(claimed), "read")
            print(file=sys.stderr)
            profiler = cProfile.Profile()
            wall, cpu = time.perf_counter(), time.process_time()
            if profile is None:
                outcomes = decide_all(bot.pipeline.decider, readings)
            else:
                outcomes = profiler.runcall(decide_all, bot.pipeline.decider, readings)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if profile is not None:
                profiler.dump_stats(profile)
    decided = len(readings)
    return {
        "n": decided,
        "database": "sqlite" if database_url is None else database_url.split(":", 1)[0],
        "wall_s": wall,
        "cpu_s": cpu,
        "ms_per_message": 1000 * wall / max(decided, 1),
        "cpu_ms_per_message": 1000 * cpu / max(decided, 1),
        "outcomes": dict(outcomes),
    }


def has_tables(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        return bool(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decisions", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="messages to decide (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", help="an empty database's URL (default: a temporary SQLite file)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the timed part here")
    args = parser.parse_args(argv)
    if args.database and has_tables(args.database):
        parser.error(f"{args.database} has tables already: give an empty database")
    summary = measure(args.n, args.seed, args.database, args.profile)
    print(
        f"decided {summary['n']} messages ({summary['database']}): {summary['wall_s']:.2f} s, "
        f"{summary['ms_per_message']:.2f} ms per message ({summary['cpu_ms_per_message']:.2f} ms CPU); "
        f"outcomes {summary['outcomes']}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
