"""Progress of a long command: a rich bar on a terminal, one plain line per item otherwise.

A log file or a pipe gets whole lines it can grep; a person at a terminal gets a bar that
redraws in place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Advance = Callable[[str, str], None]  # (item, what happened to it)


@contextmanager
def progress_reporter(action: str, total: int, stream: TextIO | None = None) -> Iterator[Advance]:
    out = stream or sys.stderr
    if out.isatty() and total > 1:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(file=out)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(action, total=total)

            def advance_bar(item: str, outcome: str) -> None:
                if outcome.startswith("not "):
                    console.print(f"{item}: {outcome}")
                bar.advance(task)

            yield advance_bar
        return
    done = 0

    def advance_line(item: str, outcome: str) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/{total}] {item}: {outcome}", file=out, flush=True)

    yield advance_line
