"""Real mail from other projects' test suites (../shared/realworld/) through the bot's own path.

Every message is imported as if it had arrived (the raw archive, SQLite) and decided by the
pipeline with its reader pool, exactly as ``mailbot import`` does; the outcome is compared with
``expected.json`` in both directions: a machine (bounce, auto-reply, list) that is not ``ignored``
is treated as a person, and a person whose mail is ``ignored`` is treated as a machine. The rules
are general (headers of RFC 3834, 3464, 5965, 2369/2919, sender conventions, report texts); the
set is split in two halves by a hash of the file name, and both halves must come out clean, so a
rule that only fits the half it was written on shows up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailbot.admin.importer import import_one
from mailbot.config import parse_settings
from mailbot.decision import ANSWERED, Outcome
from mailbot.demo import local_config
from mailbot.worker import Worker

# any moment inside the first call's window: arrival decides nothing about machine mail
ARRIVAL = datetime.fromisoformat("2024-08-20T10:00:00+08:00")
MACHINE_KINDS = frozenset({"bounce", "autoreply", "list"})
ANSWERED_OUTCOMES = frozenset(outcome.value for outcome in ANSWERED)


def half_of(name: str) -> str:
    """The stable half a file belongs to: rules were developed on "dev" and checked on "holdout"."""
    return "dev" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "holdout"


def _no_reply_style(sender: str) -> bool:
    """The sender conventions of mail nobody reads answers to (checked independently of the product)."""
    local = sender.rsplit("<", 1)[-1].strip("> ").split("@", 1)[0].lower()
    flat = local.replace("-", "").replace("_", "").replace(".", "").replace("\\", "")
    return any(mark in flat for mark in ("noreply", "donotreply", "mailerdaemon", "postmaster"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the bot keeps its data: in memory where the system offers it (the archive's 1,108
    fsyncs would otherwise take most of the run), else in the test's temporary directory."""
    memory = Path("/dev/shm")
    if memory.is_dir() and os.access(memory, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="mailbot-realworld-", dir=memory))
        try:
            yield base / "data"
        finally:
            shutil.rmtree(base, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("realworld") / "data"


@pytest.fixture(scope="module")
def outcomes(shared_dir: Path, data_dir: Path) -> list[dict[str, Any]]:
    realworld = shared_dir / "realworld"
    if not (realworld / "expected.json").is_file():
        pytest.skip(f"the real-world set is not at {realworld}")
    expected: list[dict[str, Any]] = json.loads((realworld / "expected.json").read_text(encoding="utf-8"))
    # the servers are never contacted: import records, the pipeline decides, nothing is sent
    settings = parse_settings(
        local_config(data_dir, ("127.0.0.1", 9), ("127.0.0.1", 9), "MAILBOT_REALWORLD_UNUSED"), "realworld"
    )
    pks: dict[str, int] = {}
    with Worker(settings) as bot:
        for row in expected:
            raw = (realworld / "eml" / row["file"]).read_bytes()
            pks[row["file"]] = import_one(settings, bot.store, raw, arrival=ARRIVAL).message_pk
        bot.deciding.decide()
        with bot.store.sessions() as session:
            decided = {pk: outcome for pk, outcome in session.execute(text("SELECT id, outcome FROM messages"))}
    return [{**row, "outcome": decided[pks[row["file"]]]} for row in expected]


def _confusion(rows: list[dict[str, Any]]) -> str:
    table = Counter((row["kind"], row["outcome"]) for row in rows)
    columns = sorted({outcome for _, outcome in table}, key=str)
    lines = ["kind        " + "".join(f"{str(c)[:14]:>15}" for c in columns)]
    for kind in sorted({kind for kind, _ in table}):
        lines.append(f"{kind:<12}" + "".join(f"{table[(kind, c)]:>15}" for c in columns))
    return "\n".join(lines)


def test_machines_are_ignored_and_people_are_not(outcomes: list[dict[str, Any]]) -> None:
    report: list[str] = []
    failures: list[str] = []
    for half in ("dev", "holdout"):
        rows = [row for row in outcomes if half_of(row["file"]) == half]
        machines_as_people = [r for r in rows if r["kind"] in MACHINE_KINDS and r["outcome"] != Outcome.IGNORED]
        people_as_machines = [r for r in rows if r["kind"] == "human" and r["outcome"] == Outcome.IGNORED]
        machines = sum(1 for r in rows if r["kind"] in MACHINE_KINDS)
        people = sum(1 for r in rows if r["kind"] == "human")
        report.append(
            f"{half}: {len(rows)} messages; machines treated as people {len(machines_as_people)} of {machines}; "
            f"people treated as machines {len(people_as_machines)} of {people}\n{_confusion(rows)}"
        )
        failures += [f"{half} machine as person: {r['file']} → {r['outcome']}" for r in machines_as_people]
        failures += [f"{half} person as machine: {r['file']}" for r in people_as_machines]
    print("\n\n".join(report))
    assert not failures, "\n".join(failures)


def test_no_machine_and_no_no_reply_sender_is_answered(outcomes: list[dict[str, Any]]) -> None:
    answered = [
        f"{row['file']} ({row['kind']}, from {row['from']}) → {row['outcome']}"
        for row in outcomes
        if row["outcome"] in ANSWERED_OUTCOMES and (row["must_not_answer"] or _no_reply_style(row["from"] or ""))
    ]
    assert not answered, "\n".join(answered)
