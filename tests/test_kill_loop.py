"""SIGKILL at random moments, again and again, over the whole development corpus.

``mailbot run --once`` is started against Dovecot (pymap where it is absent), a plain aiosmtpd
server that files nothing in Sent, and SQLite; it is killed with SIGKILL after a random delay
(seeded, so a failure can be replayed), started again, killed again. A last run is left to finish.
Then every corpus message must have exactly one record with its true outcome, every answerable
message exactly one answer, and no answer may be left half-sent.

Six kills by default keep the suite short; ``MAILBOT_KILL_LOOP=20`` (or more) is the long version
and ``MAILBOT_KILL_SEED`` replays another sequence.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from tests.conftest import ImapServer, load_corpus, make_config
from tests.support.invariants import invariant_violations

REPO = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("MAILBOT_KILL_LOOP", "6"))
SEED = int(os.environ.get("MAILBOT_KILL_SEED", "20240909"))
KILL_AFTER_S = (0.2, 4.0)
FINAL_RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Round:
    """What one round left behind: when it was killed and what the database held at that moment."""

    round: int
    after_s: float
    exit_code: int
    decided: int
    outbox: dict[str, int]

    def __str__(self) -> str:
        how = "killed" if self.exit_code == -signal.SIGKILL else f"exited {self.exit_code} by itself"
        return f"round {self.round}: {how} after {self.after_s:.2f} s; {self.decided} decided; outbox {self.outbox}"


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


def run_and_kill(command: list[str], env: dict[str, str], log: Path, after_s: float) -> int:
    """Start ``command``, SIGKILL its whole process group (parser workers too) after ``after_s``."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            process.wait(timeout=after_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        else:
            # it finished in time; a worker it left behind would still be cleared
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


@pytest.mark.timeout(max(60, 30 + 6 * KILLS))
def test_killed_at_random_points_loses_nothing_and_answers_once(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir)
    config = tmp_path / "mailbot.toml"
    settings = write_config(make_config(tmp_path, imap_server, smtp_sink), config)
    assert not settings.smtp.saves_to_sent, "the bot files its own copies: the sink files nothing"
    db = settings.data_dir / "mailbot.db"
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "run", "--once"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = tmp_path / "runs.log"
    chance = random.Random(SEED)

    rounds: list[Round] = []
    for round_number in range(1, KILLS + 1):
        after_s = chance.uniform(*KILL_AFTER_S)
        exit_code = run_and_kill(command, env, log, after_s)
        decided, outbox = snapshot(db)
        rounds.append(Round(round_number, after_s, exit_code, decided, outbox))
    story = "\n".join(str(item) for item in rounds)
    finished_early = [item for item in rounds if item.exit_code not in (-signal.SIGKILL, 0)]
    assert not finished_early, f"a run failed on its own:\n{story}\n{log.read_text(errors='replace')[-3000:]}"

    started = time.monotonic()
    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=FINAL_RUN_TIMEOUT_S)
    assert final.returncode == 0, f"{story}\n{final.stderr[-3000:]}"

    violations = invariant_violations(settings, truth, [mail.raw for mail in smtp_sink.received])
    assert not violations, (
        f"seed {SEED}, {KILLS} kills:\n{story}\nfinal run {time.monotonic() - started:.1f} s: {final.stdout}\n"
        + "\n".join(violations)
    )
    assert Counter(item.exit_code for item in rounds)[-signal.SIGKILL] >= 1, f"nothing was killed:\n{story}"
