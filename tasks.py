#!/usr/bin/env python3
"""Set-up and everyday tasks with nothing but Python: ``python3 tasks.py demo|test|check``.

Creates ``.venv`` on first use, installs the project into it (again only when pyproject.toml
changed), then runs the task inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def ensure_environment(extras: str) -> None:
    if not PYTHON.exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    target = f".[{extras}]" if extras else "."
    print(f"installing grantmail-intake{f'[{extras}]' if extras else ''} into .venv …", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", target], check=True, cwd=ROOT)
    stamp.write_text(wanted)


def run(*command: str) -> int:
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task == "demo":
        ensure_environment("")
        return run("mailbot", "demo", *rest)
    if task == "test":
        ensure_environment("dev")
        return run("python", "-m", "pytest", *rest)
    if task == "check":
        ensure_environment("dev")
        return run("ruff", "check", ".") or run("ruff", "format", "--check", ".") or run("mypy", ".")
    if task == "bench":
        ensure_environment("dev")
        return run("python", "-m", *(rest or ["benchmarks.rush"]))
    print(__doc__)
    print("tasks: demo [ARGS], test [PYTEST ARGS], check (ruff + mypy), bench [MODULE ARGS]")
    return 0 if task == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
