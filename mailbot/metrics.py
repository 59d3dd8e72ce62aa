"""Per-stage timings: how long fetching, reading, deciding, storing and sending take.

Kept in memory by the running bot; benchmarks and ``status`` read them, and the optional
Prometheus endpoint exports the same figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STAGES = ("fetch", "parse", "decide", "store", "send")


@dataclass
class StageTotal:
    count: int = 0
    seconds: float = 0.0


class StageTimings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, StageTotal] = {}

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            total = self._totals.setdefault(stage, StageTotal())
            total.count += count
            total.seconds += seconds

    @contextmanager
    def stage(self, name: str, count: int = 1) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, count)

    def snapshot(self) -> dict[str, StageTotal]:
        with self._lock:
            return {name: StageTotal(t.count, t.seconds) for name, t in self._totals.items()}
