"""SIGKILL at random moments, again and again, over the whole development corpus.

``mailbot run --once`` is started against Dovecot (pymap where it is absent), a plain aiosmtpd
server that files nothing in Sent, and SQLite; it is killed with SIGKILL after a random delay
(seeded, so a failure can be replayed), started again, killed again. The corpus arrives in as many
parts as there are rounds, in arrival order, so every round has mail to fetch, decide and answer;
the SMTP server takes a moment before it confirms each answer (after queueing it, as an MTA does),
so kills also land while answers are being handed over. A last run is left to finish. Then every
corpus message must have exactly one record with its true outcome, every answerable message
exactly one answer (but for at most one per kill presumed delivered, see tests/support/invariants.py),
and no answer may be left half-sent.

Six kills by default keep the suite short; ``MAILBOT_KILL_LOOP=20`` (or more) is the long version
and ``MAILBOT_KILL_SEED`` replays another sequence.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session

from mailbot.demo import write_config
from mailbot.embedded import LOOPBACK, free_port
from tests.conftest import ImapServer, corpus_truth, load_corpus, make_config
from tests.support.invariants import invariant_violations
from tests.support.processes import run_and_kill

REPO = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("MAILBOT_KILL_LOOP", "6"))
SEED = int(os.environ.get("MAILBOT_KILL_SEED", "20240909"))
KILL_AFTER_S = (0.2, 4.0)
REPLY_AFTER_S = 0.1
FINAL_RUN_TIMEOUT_S = 120


@dataclass
class SlowToConfirm:
    """Keeps each message first, then takes a moment over its reply, as a busy MTA does."""

    received: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        with self.lock:
            self.received.append(content)
        await asyncio.sleep(REPLY_AFTER_S)
        return "250 queued"

    def accepted(self) -> list[bytes]:
        with self.lock:
            return list(self.received)


@dataclass
class SlowSmtpServer:
    handler: SlowToConfirm
    host: str
    port: int


@pytest.fixture
def slow_smtp() -> Iterator[SlowSmtpServer]:
    server = SlowSmtpServer(SlowToConfirm(), LOOPBACK, free_port())
    controller = Controller(server.handler, hostname=server.host, port=server.port, decode_data=False)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class Round:
    """What one round left behind: when it was killed and what the database held at that moment."""

    number: int
    delivered: int
    after_s: float
    exit_code: int
    decided: int
    outbox: dict[str, int]

    def __str__(self) -> str:
        how = "killed" if self.exit_code == -signal.SIGKILL else f"exited {self.exit_code} by itself"
        return (
            f"round {self.number}: {self.delivered} delivered, {how} after {self.after_s:.2f} s; "
            f"{self.decided} decided; outbox {self.outbox}"
        )


def snapshot(db: Path) -> tuple[int, dict[str, int]]:
    """(messages decided, outbox rows by state) as the killed process left them."""
    if not db.exists():
        return 0, {}
    try:
        with sqlite3.connect(db, timeout=30) as connection:
            decided = connection.execute("SELECT count(*) FROM messages WHERE outcome IS NOT NULL").fetchone()[0]
            outbox = dict(connection.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # killed before the schema was there
        return 0, {}
    return int(decided), {str(state): int(count) for state, count in outbox.items()}


def in_parts(names: list[str], parts: int) -> list[list[str]]:
    """``names`` cut into ``parts`` consecutive runs of nearly equal length."""
    size, extra = divmod(len(names), parts)
    bounds = [0]
    for index in range(parts):
        bounds.append(bounds[-1] + size + (1 if index < extra else 0))
    return [names[start:end] for start, end in itertools.pairwise(bounds)]


@pytest.mark.timeout(max(60, 20 + 6 * KILLS))
def test_killed_at_random_points_loses_nothing_and_answers_once(
    tmp_path: Path, imap_server: ImapServer, slow_smtp: SlowSmtpServer, corpus_dir: Path
) -> None:
    everything = corpus_truth(corpus_dir)
    ordered = sorted(everything, key=lambda name: everything[name]["arrival"])
    config = tmp_path / "mailbot.toml"
    smtp: Any = slow_smtp  # the configuration needs only its host and port
    settings = write_config(make_config(tmp_path, imap_server, smtp), config)
    assert not settings.smtp.saves_to_sent, "the bot files its own copies: the server files nothing"
    db = settings.data_dir / "mailbot.db"
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "run", "--once"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = tmp_path / "runs.log"
    chance = random.Random(SEED)

    truth: dict[str, dict[str, Any]] = {}
    rounds: list[Round] = []
    for number, part in enumerate(in_parts(ordered, KILLS), start=1):
        truth |= load_corpus(imap_server, corpus_dir, part)
        after_s = chance.uniform(*KILL_AFTER_S)
        exit_code = run_and_kill(command, env, log, after_s)
        rounds.append(Round(number, len(truth), after_s, exit_code, *snapshot(db)))
    story = "\n".join(str(item) for item in rounds)
    print(f"seed {SEED}:\n{story}")
    failed = [item for item in rounds if item.exit_code not in (-signal.SIGKILL, 0)]
    assert not failed, f"a run failed on its own:\n{story}\n{log.read_text(errors='replace')[-3000:]}"
    assert any(item.exit_code == -signal.SIGKILL for item in rounds), f"nothing was killed:\n{story}"

    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=FINAL_RUN_TIMEOUT_S)
    assert final.returncode == 0, f"{story}\n{final.stderr[-3000:]}"
    assert len(truth) == len(everything)
    kills = sum(1 for item in rounds if item.exit_code == -signal.SIGKILL)
    violations = invariant_violations(settings, truth, slow_smtp.handler.accepted(), stops=kills)
    assert not violations, f"seed {SEED}, {KILLS} kills:\n{story}\nfinal run: {final.stdout}" + "\n".join(violations)
