"""The rush's figures: one summary per invocation (the JSON) and the table printed from it."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.rush_load import Planned
from benchmarks.rush_measure import BotRun, FloorRun


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarise(
    args: argparse.Namespace, load: Sequence[Planned], runs: list[BotRun], floor_run: FloorRun
) -> dict[str, Any]:
    floor_s = floor_run.seconds
    summary: dict[str, Any] = {
        "n": len(load),
        "kinds": dict(Counter(p.kind for p in load)),
        "pdf_share": args.pdf_share,
        "workers": args.workers,
        "floor_s": floor_s,
        "floor_runs_s": list(floor_run.each_s),
        "floor_cells_read": floor_run.cells_read,
        "floor_messages_per_s": len(load) / floor_s,
        "floor_cpu_s": floor_run.cpu_s,
    }
    headline = next((run for run in runs if run.mode == "pool"), runs[0])
    for prefix, run in [("", headline), *(("single_", r) for r in runs if r.mode == "single")]:
        summary.update({prefix + key: value for key, value in run_figures(run, len(load), floor_s).items()})
    return summary


def run_figures(run: BotRun, n: int, floor_s: float) -> dict[str, Any]:
    return {
        "mode": run.mode,
        "bot_s": run.seconds,
        "messages_per_s": n / run.seconds,
        "ratio_to_floor": run.seconds / floor_s,
        "p50_latency_s": percentile(run.latencies, 0.5),
        "p95_latency_s": percentile(run.latencies, 0.95),
        "max_latency_s": max(run.latencies, default=float("nan")),
        "peak_rss_mb": run.rss_self_mb,
        "peak_rss_worker_mb": run.rss_workers_mb,
        "peak_pss_total_mb": run.pss_total_mb,
        "stages": run.stages,
        "cpu_s": run.cpu_s,
        "cpu_ms_per_message": {name: seconds * 1000 / n for name, seconds in run.cpu_s.items()},
        "stage_counts": run.stage_counts,
        "outcomes": run.outcomes,
        "processed": run.processed,
        "acknowledged": len(run.latencies),
        "unanswered": run.unanswered,
        "errors": run.errors,
    }


def print_table(summary: dict[str, Any]) -> None:
    shown = [(f"bot, {summary['mode']}", "")]
    if "single_bot_s" in summary and summary["mode"] != "single":
        shown.append(("bot, single", "single_"))
    rows = [
        ("wall time (s)", "bot_s", "{:.2f}"),
        ("messages/s", "messages_per_s", "{:.1f}"),
        ("bot / floor", "ratio_to_floor", "{:.2f}x"),
        ("latency p50 (s)", "p50_latency_s", "{:.2f}"),
        ("latency p95 (s)", "p95_latency_s", "{:.2f}"),
        ("latency max (s)", "max_latency_s", "{:.2f}"),
        ("peak RSS bot (MB)", "peak_rss_mb", "{:.0f}"),
        ("peak RSS a worker (MB)", "peak_rss_worker_mb", "{:.0f}"),
        ("peak PSS whole bot (MB)", "peak_pss_total_mb", "{:.0f}"),
        ("processed", "processed", "{}"),
        ("acknowledged", "acknowledged", "{}"),
        ("expected, not answered", "unanswered", "{}"),
    ]
    print(f"\nDeadline rush: {summary['n']} messages ({', '.join(f'{k} {v}' for k, v in summary['kinds'].items())})")
    floor_cpu = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in summary["floor_cpu_s"].items())
    each = " and ".join(f"{seconds:.2f}" for seconds in summary["floor_runs_s"])
    print(
        f"floor: {summary['floor_s']:.2f} s, the mean of {each} s before and after the bot "
        f"({summary['floor_messages_per_s']:.1f} messages/s; CPU {floor_cpu})\n"
    )
    print(f"{'':<24}" + "".join(f"{title:>14}" for title, _ in shown))
    for label, key, fmt in rows:
        print(f"{label:<24}" + "".join(f"{fmt.format(summary[prefix + key]):>14}" for _, prefix in shown))
    stage_names = sorted({s for _, prefix in shown for s in summary[f"{prefix}stages"]})
    for stage in stage_names:
        cells = "".join(f"{summary[prefix + 'stages'].get(stage, 0.0):>14.2f}" for _, prefix in shown)
        print(f"{'stage ' + stage + ' (s)':<24}" + cells)
    # time in no stage: in single-process mode that is where the reading happens
    outside = "".join(f"{summary[p + 'bot_s'] - sum(summary[p + 'stages'].values()):>14.2f}" for _, p in shown)
    print(f"{'in no stage (s)':<24}" + outside)
    # where the two cores went: the bot's processes and the servers it talks to
    for name in summary["cpu_s"]:
        cells = "".join(f"{summary[prefix + 'cpu_s'].get(name, 0.0):>14.2f}" for _, prefix in shown)
        print(f"{'CPU ' + name + ' (s)':<24}" + cells)
    for _, prefix in shown:
        for error in summary[f"{prefix}errors"]:
            print(f"error ({prefix or 'pool'}): {error}")
    if "steady" in summary:
        steady_run = summary["steady"]
        print(
            f"\nsteady {steady_run['rate_per_s']}/s for {steady_run['seconds']} s: {steady_run['acknowledged']}/"
            f"{steady_run['messages']} answered, latency p50 {steady_run['p50_latency_s']:.2f} s, "
            f"p95 {steady_run['p95_latency_s']:.2f} s, max {steady_run['max_latency_s']:.2f} s"
        )
