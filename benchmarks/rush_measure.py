"""The rush's measurements: the bot in a fresh process (time, stages, CPU, memory) and the floor,
the least work any reader of the same mailbox must do."""

from __future__ import annotations

import email
import email.parser
import email.policy
import io
import multiprocessing
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docx
import imapclient
import pdfplumber

from benchmarks.rush_load import PDF, Planned
from benchmarks.rush_servers import PASSWORD, TimedSink
from mailbot.config import parse_settings
from mailbot.samples import DOCX
from mailbot.worker import Worker
from tests.support.dovecot import DovecotServer

FETCH_CHUNK = 50


@dataclass
class BotRun:
    mode: str
    started: float  # wall clock, to line up with append and sink times
    seconds: float
    processed: int
    sent: int
    errors: list[str]
    stages: dict[str, float]
    stage_counts: dict[str, int]
    outcomes: dict[str, int]
    rss_self_mb: float
    rss_workers_mb: float
    pss_total_mb: float = 0.0  # sampled from outside by run_bot_isolated
    cpu_s: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    unanswered: int = 0


def _descendants(root: int | None = None) -> set[int]:
    """The live descendants of ``root`` (default: this process): the forkserver and the parser workers."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    mine: set[int] = set()
    frontier = {os.getpid() if root is None else root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    return mine


def _proc_kib(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file (0 once the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class MemorySampler:
    """The bot's memory while it runs, sampled a few times a second from outside its process.

    ``ru_maxrss`` will not do: Linux keeps it across exec, so a child started by fork + exec
    reports the parent's size at the fork (here the whole generated load). VmHWM is reset by exec;
    PSS splits pages shared between the bot, the forkserver and the workers among them, so their
    sum is what the whole bot occupies. Reading it costs a few milliseconds a time, so it is read
    by this process, not by a thread inside the bot competing with the bot's own.
    """

    def __init__(self, root: int, interval_s: float = 0.5) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak_total_pss_kib = 0
        self.cpu_s = 0.0  # what sampling cost, so it is not counted as the SMTP sink's
        self._pids: set[int] = set()
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self.sample()
        self.cpu_s = time.thread_time() - started

    def sample(self) -> None:
        if self._samples % 8 == 0:  # walking /proc for the workers costs more than sampling them
            self._pids = {self.root, *_descendants(self.root)}
        self._samples += 1
        total = sum(_proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in self._pids)
        self.peak_total_pss_kib = max(self.peak_total_pss_kib, total)


def _workers_peak_mb() -> float:
    """The largest VmHWM among the live descendants (the parser workers while they run)."""
    return max((_proc_kib(f"/proc/{pid}/status", "VmHWM:") for pid in _descendants()), default=0) / 1024


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped (/proc/PID/stat utime … cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _stolen_s() -> float:
    """CPU seconds the host gave to others while this machine's cores had work (/proc/stat steal).

    On a shared virtual machine this varies from run to run and makes every party's CPU time and
    the wall times noisier; a run with much of it is worth repeating before comparing.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _descendants_cpu_s() -> float:
    total = 0.0
    for pid in _descendants():
        try:
            total += _process_cpu_s(pid)
        except OSError:
            continue  # it ended meanwhile
    return total


def run_bot(raw_config: dict[str, Any], inline: bool) -> dict[str, Any]:
    """One ``single_pass`` in this (fresh) process; returned as plain data for the parent."""
    settings = parse_settings(raw_config, "rush configuration")
    with Worker(settings, inline=inline) as bot:
        started_wall, started = time.time(), time.perf_counter()
        cpu_before = _cpu_s(resource.RUSAGE_SELF)
        summary = bot.single_pass()
        seconds = time.perf_counter() - started
        cpu = {
            "bot": _cpu_s(resource.RUSAGE_SELF) - cpu_before,
            # the forkserver and the live workers, with any workers replaced during the run
            "parser workers": _descendants_cpu_s(),
        }
        workers_peak = _workers_peak_mb()
        snapshot = bot.timings.snapshot()
    outcomes = Counter(p.outcome for p in summary.processed)
    return asdict(
        BotRun(
            mode="single" if inline else "pool",
            started=started_wall,
            seconds=seconds,
            processed=len(summary.processed),
            sent=len(summary.sent),
            errors=summary.errors,
            stages={name: total.seconds for name, total in snapshot.items()},
            stage_counts={name: total.count for name, total in snapshot.items()},
            outcomes=dict(outcomes),
            rss_self_mb=_proc_kib("/proc/self/status", "VmHWM:") / 1024,
            rss_workers_mb=workers_peak,
            cpu_s=cpu,
        )
    )


def _run_bot_child(raw_config: dict[str, Any], inline: bool, results: Any) -> None:
    results.put(run_bot(raw_config, inline))


def run_bot_isolated(raw_config: dict[str, Any], inline: bool, imap_server_pid: int) -> BotRun:
    """``run_bot`` in a new process, so its peak RSS is the bot's alone.

    Also counts the CPU the servers spent meanwhile: this process's (the SMTP sink; it does
    nothing else while it waits but sample the bot's memory, counted apart) and Dovecot's (its
    master and the imap processes it reaped).
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_run_bot_child, args=(raw_config, inline, results), name="rush-bot")
    sink_before, imap_before, stolen_before = time.process_time(), _process_cpu_s(imap_server_pid), _stolen_s()
    child.start()
    assert child.pid is not None
    try:
        with MemorySampler(child.pid) as memory:
            outcome: dict[str, Any] = results.get()
    finally:
        child.join()
    time.sleep(0.5)  # Dovecot reaps the bot's imap processes after their logout
    outcome["pss_total_mb"] = memory.peak_total_pss_kib / 1024
    outcome["cpu_s"]["SMTP sink"] = time.process_time() - sink_before - memory.cpu_s
    outcome["cpu_s"]["IMAP server"] = _process_cpu_s(imap_server_pid) - imap_before
    outcome["cpu_s"]["memory sampler"] = memory.cpu_s
    outcome["cpu_s"]["stolen by the host"] = _stolen_s() - stolen_before
    return BotRun(**outcome)


def read_form(part: email.message.EmailMessage) -> int:
    """The form's cells as text (the least any reader must do); returns how many were read."""
    data = part.get_content()
    if not isinstance(data, bytes):
        return 0
    if part.get_content_type() == PDF:
        with pdfplumber.open(io.BytesIO(data)) as document:
            return sum(len(row) for table in document.pages[0].extract_tables() for row in table)
    if part.get_content_type() == DOCX:
        return sum(len(row.cells) for table in docx.Document(io.BytesIO(data)).tables for row in table.rows)
    return 0


@dataclass(frozen=True)
class FloorRun:
    seconds: float
    cells_read: int
    cpu_s: dict[str, float]
    each_s: tuple[float, ...] = ()


def mean_floor(runs: Sequence[FloorRun]) -> FloorRun:
    """The floor as the mean of its runs, each run's time kept beside it."""
    names = {name for run in runs for name in run.cpu_s}
    return FloorRun(
        seconds=sum(run.seconds for run in runs) / len(runs),
        cells_read=runs[0].cells_read,
        cpu_s={name: sum(run.cpu_s.get(name, 0.0) for run in runs) / len(runs) for name in sorted(names)},
        each_s=tuple(run.seconds for run in runs),
    )


def floor(dovecot: DovecotServer, users: Sequence[str]) -> FloorRun:
    """Fetch everything and read the forms, nothing else: the least time the bot's work could take."""
    started = time.perf_counter()
    cpu_before, imap_before, stolen_before = time.process_time(), _process_cpu_s(dovecot.pid), _stolen_s()
    read = 0
    for user in users:
        client = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False)
        client.login(user, PASSWORD)
        try:
            client.select_folder("INBOX", readonly=True)
            uids = client.search(["ALL"])
            for start in range(0, len(uids), FETCH_CHUNK):
                for data in client.fetch(uids[start : start + FETCH_CHUNK], ["BODY.PEEK[]"]).values():
                    message = email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
                    assert isinstance(message, email.message.EmailMessage)
                    for part in message.iter_attachments():
                        read += read_form(part)
        finally:
            client.logout()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    time.sleep(0.5)  # Dovecot reaps the imap processes after their logout
    imap = _process_cpu_s(dovecot.pid) - imap_before
    return FloorRun(
        seconds, read, {"floor": cpu, "IMAP server": imap, "stolen by the host": _stolen_s() - stolen_before}
    )


def attach_latencies(
    run: BotRun, load: Sequence[Planned], appended: dict[str, float], appends_done: float, sink: TimedSink
) -> None:
    """Arrival to answer; a run that started after the appends had finished is not charged the gap."""
    offset = max(0.0, run.started - appends_done)
    for planned in load:
        if not planned.answered:
            continue
        answered_at = sink.arrived.pop(planned.message_id, None)
        if answered_at is None:
            run.unanswered += 1
        else:
            run.latencies.append(answered_at - appended[planned.message_id] - offset)
