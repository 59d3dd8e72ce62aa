"""Admin commands open the database, the archive and the review queue, and nothing else.

Run as the real ``mailbot`` command: no parser process is started to list the queue, and the
schema is changed only by ``mailbot migrate``, ``mailbot check --fix`` and ``mailbot run``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_first_contact import REPO, config_file, mailbot

EXIT_SCHEMA = 4  # documented in `mailbot --help`


def tables_in(database: Path) -> list[str]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def descendants_of(root: int) -> set[int]:
    """Every living process below ``root``, from the parent pid each /proc/PID/stat names."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def descendants_while_running(*args: str) -> tuple[int, set[int]]:
    """Run ``mailbot ARGS``, watching every process started below it until it exits."""
    environment = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    environment.pop("MAILBOT_CONFIG", None)
    command = subprocess.Popen(
        [sys.executable, "-m", "mailbot", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd=REPO,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 180
    while command.poll() is None and time.monotonic() < deadline:
        seen |= descendants_of(command.pid)
        time.sleep(0.002)
    return command.wait(timeout=60), seen


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_queue_list_on_a_migrated_database_starts_no_process(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert mailbot("--config", str(config), "migrate").returncode == 0
    code, children = descendants_while_running("--config", str(config), "queue", "list")
    assert code == 0
    assert children == set(), "queue list started a parser pool"


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "list"],
        ["queue", "show", "1"],
        ["export", "--format", "csv"],
        ["bundle", "--call", "smp-zhipu-2024", "-o", "bundle.zip"],
        ["purge", "--call", "smp-zhipu-2024", "--dry-run"],
        ["digest", "--call", "smp-zhipu-2024", "--preview", "digest.html"],
    ],
)
def test_an_admin_command_on_an_unmigrated_database_says_to_migrate(tmp_path: Path, command: list[str]) -> None:
    config = config_file(tmp_path)
    done = mailbot("--config", str(config), *command)
    assert done.returncode == EXIT_SCHEMA, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "the database schema is at nothing" in line and "run `mailbot migrate`" in line, line
    assert tables_in(tmp_path / "data" / "mailbot.db") == []


def test_mailbot_migrate_makes_admin_commands_work(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert mailbot("--config", str(config), "queue", "list").returncode == EXIT_SCHEMA
    migrated = mailbot("--config", str(config), "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "alembic_version" in tables_in(tmp_path / "data" / "mailbot.db")
    listed = mailbot("--config", str(config), "queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert "The review queue is empty" in listed.stdout
    again = mailbot("--config", str(config), "migrate")  # nothing left to do is no failure
    assert again.returncode == 0 and "already current" in again.stdout, again.stdout


def test_check_names_migrate_and_check_fix_migrates_then_checks(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    checked = mailbot("--config", str(config), "check", env={"MAILBOT_FIRST_CONTACT_PASSWORD": "x"})
    assert tables_in(tmp_path / "data" / "mailbot.db") == []
    assert any(line.startswith("OK") and "mailbot migrate" in line for line in checked.stdout.splitlines())
    fixed = mailbot("--config", str(config), "check", "--fix", env={"MAILBOT_FIRST_CONTACT_PASSWORD": "x"})
    database_line = next(line for line in fixed.stdout.splitlines() if "database:" in line)
    assert database_line.startswith("OK") and "is current" in database_line, fixed.stdout
    assert "alembic_version" in tables_in(tmp_path / "data" / "mailbot.db")


def test_an_older_schema_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    from alembic import command

    from storage.db import _alembic_config, make_engine, shipped_revision

    config = config_file(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'mailbot.db'}")
    command.upgrade(_alembic_config(engine), "0003")  # as a mailbot of an earlier version left it
    head = shipped_revision(engine)
    engine.dispose()
    assert head != "0003"
    for admin_command in (["queue", "list"], ["status"]):
        done = mailbot("--config", str(config), *admin_command)
        assert done.returncode == EXIT_SCHEMA, (admin_command, done.stderr)
        assert f"the database schema is at 0003, this mailbot needs {head}" in done.stderr
    checked = mailbot("--config", str(config), "check", env={"MAILBOT_FIRST_CONTACT_PASSWORD": "x"})
    database_line = next(line for line in checked.stdout.splitlines() if "database:" in line)
    assert database_line.startswith("FAIL") and "`mailbot migrate`" in database_line, database_line
    with sqlite3.connect(tmp_path / "data" / "mailbot.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
