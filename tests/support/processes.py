"""Running the bot as a process of its own, the way an operator or systemd does, for crash tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


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


def run_to_end(command: list[str], env: dict[str, str], log: Path, timeout_s: float) -> int:
    """Run ``command`` until it exits by itself (a failpoint's SIGKILL included); a hang is an error."""
    started = time.monotonic()
    code = run_and_kill(command, env, log, timeout_s)
    if time.monotonic() - started >= timeout_s:
        raise TimeoutError(f"{' '.join(command[-4:])} did not finish within {timeout_s:.0f} s; see {log}")
    return code
