"""Metrics: stage timings add up, and the Prometheus endpoint shows the same figures as status."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from mailbot.embedded import SmtpSink, free_port
from mailbot.metrics import MetricsCollector, StageTimings, serve_metrics, status_figures
from mailbot.worker import Worker
from tests.conftest import ImapServer, load_corpus, make_settings


def test_stage_timings_accumulate() -> None:
    timings = StageTimings()
    with timings.stage("parse"):
        pass
    timings.add("parse", 0.5, count=2)
    total = timings.snapshot()["parse"]
    assert total.count == 3 and total.seconds >= 0.5


def test_prometheus_endpoint_reports_the_pipeline(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    pytest.importorskip("prometheus_client")
    load_corpus(imap_server, corpus_dir, ["smp-001", "smp-002", "smp-009"])
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        bot.single_pass()
        figures = status_figures(bot.store, settings)
        assert figures["messages_done"] == 2 and figures["messages_review"] == 1
        assert figures["outbox_sent"] == 3
        assert figures["mailbox_last_success_timestamp:smp"] > 0
        port = free_port()
        serve_metrics(MetricsCollector(bot.store, settings, bot.timings), "127.0.0.1", port)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'mailbot_messages{state="review"} 1.0' in page
    assert 'mailbot_outbox{state="sent"} 3.0' in page
    assert 'mailbot_stage_runs_total{stage="parse"} 3.0' in page
    assert 'mailbot_mailbox_failing{mailbox="smp"} 0.0' in page
