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
from typing import Any

from mailbot.clock import utcnow
from mailbot.config import Settings
from storage import Storage
from storage.models import MessageState, OutboxState
from storage.reports import answers_by_state, messages_by_state, oldest_review_arrival, poll_cursor, poll_failing

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


def status_figures(store: Storage, settings: Settings) -> dict[str, float]:
    """The figures ``status`` prints, as numbers (for Prometheus and tests)."""
    figures: dict[str, float] = {}
    with store.sessions() as session:
        states = messages_by_state(session)
        for message_state in MessageState:
            figures[f"messages_{message_state.value}"] = float(states.get(message_state.value, 0))
        outbox = answers_by_state(session)
        for outbox_state in OutboxState:
            figures[f"outbox_{outbox_state.value}"] = float(outbox.get(outbox_state.value, 0))
        oldest = oldest_review_arrival(session)
        figures["review_oldest_age_seconds"] = (utcnow() - oldest).total_seconds() if oldest else 0.0
        for box in settings.mailbox:
            cursor = poll_cursor(session, box.name, box.folder)
            success = cursor.last_success if cursor else None
            figures[f"mailbox_last_success_timestamp:{box.name}"] = success.timestamp() if success else 0.0
            figures[f"mailbox_failing:{box.name}"] = 1.0 if poll_failing(cursor) else 0.0
    return figures


class MetricsCollector:
    """A Prometheus collector that reads the database when scraped, plus the in-memory stage timings."""

    def __init__(self, store: Storage, settings: Settings, timings: StageTimings) -> None:
        self.store = store
        self.settings = settings
        self.timings = timings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        figures = status_figures(self.store, self.settings)
        messages = GaugeMetricFamily("mailbot_messages", "Messages by processing state", labels=["state"])
        outbox = GaugeMetricFamily("mailbot_outbox", "Outgoing mail by state", labels=["state"])
        last_poll = GaugeMetricFamily(
            "mailbot_mailbox_last_success_timestamp_seconds", "Last good poll of a mailbox", labels=["mailbox"]
        )
        failing = GaugeMetricFamily("mailbot_mailbox_failing", "1 while a mailbox's polls fail", labels=["mailbox"])
        for key, value in figures.items():
            name, _, label = key.partition(":")
            if name.startswith("messages_"):
                messages.add_metric([name.removeprefix("messages_")], value)
            elif name.startswith("outbox_"):
                outbox.add_metric([name.removeprefix("outbox_")], value)
            elif name == "mailbox_last_success_timestamp":
                last_poll.add_metric([label], value)
            elif name == "mailbox_failing":
                failing.add_metric([label], value)
        yield from (messages, outbox, last_poll, failing)
        yield GaugeMetricFamily(
            "mailbot_review_oldest_age_seconds",
            "Age of the oldest item in the review queue",
            value=figures["review_oldest_age_seconds"],
        )
        seconds = CounterMetricFamily("mailbot_stage_seconds", "Time spent per pipeline stage", labels=["stage"])
        counts = CounterMetricFamily("mailbot_stage_runs", "Runs of each pipeline stage", labels=["stage"])
        for stage, total in self.timings.snapshot().items():
            seconds.add_metric([stage], total.seconds)
            counts.add_metric([stage], float(total.count))
        yield from (seconds, counts)


def serve_metrics(collector: MetricsCollector, host: str, port: int) -> None:
    """Expose the collector over HTTP (loopback by default); needs the optional prometheus-client."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError as exc:
        raise RuntimeError(
            "[metrics] is configured but prometheus-client is not installed: pip install 'mailbot[metrics]'"
        ) from exc
    registry = CollectorRegistry()
    registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
