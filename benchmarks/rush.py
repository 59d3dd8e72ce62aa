"""Deadline rush: the whole bot against a real Dovecot full of last-minute submissions.

    python -m benchmarks.rush [--n 200] [--json FILE] [--workers K] [--mode pool|single|both]
                              [--pdf-share S] [--pdf-forms P] [--steady RATE --seconds S] [--seed SEED]

It makes its own load: N messages to the two configured calls, of the first submissions a share S
(default 0.4) carrying a PDF of 2-15 pages made from the form and the rest a filled-in Word form (P
PDF forms padded with proposal pages and converted once by LibreOffice headless, then reused under
fresh Message-IDs), with revisions, second projects and out-of-office replies mixed in.
``--pdf-share 0`` is the Word-only load, where the bot's own work per message weighs most. The
messages are appended to a throw-away Dovecot with arrival times as INTERNALDATE, then measured
three ways on the same mailbox content:

* the bot with its parser pool (``Bot(settings)``) and in one process (``Bot(settings, inline=True)``),
  each in a fresh process with a fresh SQLite database, by one ``run_once()``: messages/s, per-stage
  seconds, arrival-to-acknowledgement latency seen by an SMTP sink, peak RSS of the bot process and
  of its parser workers;
* a floor: one bare loop that fetches with imapclient and reads the form with python-docx or
  pdfplumber, nothing else; the bot's time over the floor's says what the bot's own work costs.

``--steady RATE --seconds S`` adds a second scenario on a fresh Dovecot: RATE messages a second for
S seconds while ``run_forever()`` waits in IDLE, reporting arrival-to-acknowledgement latency.

The default N finishes in a few minutes on two cores. The deadline-day load is

    python -m benchmarks.rush --n 2000 --json rush-2000.json --steady 5 --seconds 60

Nothing is asserted: the numbers are for reading (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import email
import email.parser
import email.policy
import io
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import docx
import imapclient
import pdfplumber
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from mailbot.app import Bot
from mailbot.config import CallSettings, Settings, parse_settings
from mailbot.demo import local_config
from mailbot.embedded import SmtpSink
from mailbot.samples import DOCX, _mail, _person, form_document
from tests.support.dovecot import DovecotServer

PASSWORD_ENV = "MAILBOT_RUSH_PASSWORD"
PASSWORD = "rush-password-51f0"  # a throw-away account on a loopback-only server
PDF = "application/pdf"
MIB = 1024 * 1024
HEADERS_ONLY = email.parser.BytesParser(policy=email.policy.compat32)
FETCH_CHUNK = 50
SOFFICE_TIMEOUT_S = 300
PDF_APPLICANT_SERIALS = 90_000
DEFAULT_PDF_SHARE = 0.4  # of first submissions; the rest carry a Word form

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "军", "杰", "涛", "明", "超", "华", "平", "辉", "鹏", "婷"]
INSTITUTIONS = [
    ("清华大学", "tsinghua.edu.cn"),
    ("北京大学", "pku.edu.cn"),
    ("浙江大学", "zju.edu.cn"),
    ("复旦大学", "fudan.edu.cn"),
    ("南京大学", "nju.edu.cn"),
    ("武汉大学", "whu.edu.cn"),
    ("中山大学", "sysu.edu.cn"),
    ("上海交通大学", "sjtu.edu.cn"),
    ("中国科学院自动化研究所", "ia.ac.cn"),
    ("哈尔滨工业大学", "hit.edu.cn"),
]
TITLES = ["教授", "副教授", "研究员", "副研究员", "讲师", "助理研究员"]
BODY_TEXT = (
    "本项目面向大模型在交叉学科中的应用，拟研究面向科学数据的知识抽取、推理与验证方法，"
    "构建可复现的评测基准，并在材料、生物与社会科学场景中开展示范应用。"
)


# --- the load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One message of the load: where it goes, when it arrives, and whether it should be answered."""

    user: str
    raw: bytes
    message_id: str
    arrival: datetime
    kind: str  # docx | pdf | revision | second-project | auto-reply
    answered: bool


@dataclass
class Applicant:
    call: CallSettings
    name: str
    email: str
    values: dict[str, object]
    messages: int = 1


def header_of(raw: bytes, name: str) -> str:
    """One header of a message, from its header section alone: the harness's own cost stays small."""
    headers = HEADERS_ONLY.parsebytes(raw, headersonly=True)
    return str(headers.get(name, "")).strip()


def message_id_of(raw: bytes) -> str:
    return header_of(raw, "Message-ID")


def padded_form(call: CallSettings, values: dict[str, object], extra_pages: int) -> bytes:
    """The Word form followed by ``extra_pages`` pages of proposal text (a PDF's usual shape)."""
    document = docx.Document(io.BytesIO(form_document(call, values)))
    for page in range(extra_pages):
        document.add_page_break()  # type: ignore[no-untyped-call]
        document.add_heading(f"{page + 1}. 研究内容与技术路线", level=2)
        for _ in range(4):
            document.add_paragraph(BODY_TEXT * 3)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def convert_to_pdf(documents: dict[str, bytes], workdir: Path) -> dict[str, bytes]:
    """Convert .docx files with LibreOffice headless in one call, with a profile of its own."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        print("soffice (LibreOffice) is not installed: the load carries .docx forms only", flush=True)
        return {}
    source, target, profile = workdir / "docx", workdir / "pdf", workdir / "profile"
    source.mkdir()
    for name, data in documents.items():
        (source / f"{name}.docx").write_bytes(data)
    command = [
        soffice,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--convert-to",
        "pdf",
        "--outdir",
        str(target),
        *sorted(str(p) for p in source.glob("*.docx")),
    ]
    completed = subprocess.run(command, capture_output=True, timeout=SOFFICE_TIMEOUT_S, check=False)
    converted = {name: (target / f"{name}.pdf") for name in documents}
    missing = [name for name, path in converted.items() if not path.exists()]
    if missing:
        print(f"soffice did not convert {missing}: {completed.stderr.decode(errors='replace')[-500:]}", flush=True)
    return {name: path.read_bytes() for name, path in converted.items() if path.exists()}


def pdf_forms(calls: Sequence[CallSettings], per_call: int, rng: random.Random) -> dict[str, list[bytes]]:
    """``per_call`` PDF forms for each call, of 2 to 15 pages, made once and reused."""
    documents: dict[str, bytes] = {}
    for call in calls:
        for index in range(per_call):
            # addresses no sender of the load uses: the answers to these forms' applicants pile up
            name, email_address = _applicant_identity(rng, PDF_APPLICANT_SERIALS + index)
            institution = INSTITUTIONS[index % len(INSTITUTIONS)][0]
            values = _person(call, name, institution, email_address, rng.choice(TITLES), index)
            values["phone"] = _mobile(PDF_APPLICANT_SERIALS + index)
            extra = 1 + (index * 13) // max(1, per_call - 1) if per_call > 1 else rng.randint(1, 14)
            documents[f"{call.id}-{index:02d}"] = padded_form(call, values, extra)
    with tempfile.TemporaryDirectory(prefix="rush-soffice-") as workdir:
        started = time.perf_counter()
        converted = convert_to_pdf(documents, Path(workdir))
    if converted:
        pages = sorted(_page_count(data) for data in converted.values())
        print(
            f"converted {len(converted)} forms to PDF in {time.perf_counter() - started:.1f} s "
            f"(pages: {', '.join(map(str, pages))})",
            flush=True,
        )
    return {call.id: [data for name, data in sorted(converted.items()) if name.startswith(call.id)] for call in calls}


def _page_count(pdf: bytes) -> int:
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        return len(document.pages)


def _applicant_identity(rng: random.Random, serial: int) -> tuple[str, str]:
    name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.randint(1, 2)))
    domain = INSTITUTIONS[serial % len(INSTITUTIONS)][1]
    return name, f"applicant{serial:05d}@{domain}"


def _mobile(serial: int) -> str:
    """Every applicant their own mobile number, as in real forms (the sample forms share one)."""
    return f"137{serial:08d}"


def build_load(
    settings: Settings,
    n: int,
    pdfs: dict[str, list[bytes]],
    rng: random.Random,
    window: timedelta,
    pdf_share: float = DEFAULT_PDF_SHARE,
) -> list[Planned]:
    """N messages arriving over ``window`` before each call's deadline, busier as it nears.

    ``pdf_share`` of the first submissions carry a PDF from ``pdfs`` (none when there are none).
    """
    users = {call_id: box.user for box in settings.mailbox for call_id in box.calls}
    applicants: list[Applicant] = []
    out: list[Planned] = []
    for serial in range(n):
        call = settings.call[serial % len(settings.call)]
        arrival = call.deadline - window * (rng.random() ** 2) - timedelta(seconds=5)
        to = call.addresses[0]
        roll = rng.random()
        earlier = [a for a in applicants if a.call.id == call.id and a.messages < 3]
        if roll < 0.04:
            name, address = _applicant_identity(rng, 50_000 + serial)
            raw = _mail(
                (name, address),
                to,
                "自动回复: 申报通知",
                arrival,
                "我正在出差，回来后回复您。",
                extra_headers={"Auto-Submitted": "auto-replied"},
            )
            kind, answered = "auto-reply", False
        elif roll < 0.14 and earlier:
            applicant = rng.choice(earlier)
            applicant.messages += 1
            if roll < 0.10:
                applicant.values["phone"] = f"139{rng.randint(0, 99_999_999):08d}"
                kind, subject, body = "revision", "申报材料（更新版）", "修改了联系方式，以此版为准。"
            else:
                topic = call.topic[rng.randrange(len(call.topic))].code if call.topic else ""
                applicant.values.update(project_title=f"第二个项目：面向多模态数据的智能体研究{serial}", topic=topic)
                kind, subject, body = "second-project", "再次申报", "我还有一个项目想申报。"
            attachment = ("申报表.docx", form_document(call, applicant.values), DOCX)
            raw = _mail((applicant.name, applicant.email), to, subject, arrival, body, [attachment])
            answered = True
        else:
            name, address = _applicant_identity(rng, serial)
            institution = INSTITUTIONS[serial % len(INSTITUTIONS)][0]
            values = _person(call, name, institution, address, rng.choice(TITLES), serial)
            values["phone"] = _mobile(serial)
            subject = f"{call.reference_prefix} 申报-{name}-{institution}"
            if pdfs.get(call.id) and rng.random() < pdf_share:
                attachment = (f"申报书-{name}.pdf", rng.choice(pdfs[call.id]), PDF)
                kind = "pdf"
            else:
                attachment = (f"申报表-{name}.docx", form_document(call, values), DOCX)
                kind = "docx"
                applicants.append(Applicant(call, name, address, values))
            raw = _mail((name, address), to, subject, arrival, "您好，附件是申报材料，请查收。", [attachment])
            answered = True
        out.append(Planned(users[call.id], raw, message_id_of(raw), arrival, kind, answered))
    return sorted(out, key=lambda p: p.arrival)


# --- the servers -----------------------------------------------------------------------------------


class TimedSink(SmtpSink):
    """The SMTP sink, also noting when each answer arrived, by the Message-ID it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}
        keep = self.handler.handle_DATA

        async def handle_data(server: SMTPProtocol, session: SmtpSession, envelope: SmtpEnvelope) -> str:
            reply = await keep(server, session, envelope)
            content = envelope.original_content or envelope.content or b""
            raw = content if isinstance(content, bytes) else str(content).encode()
            self.arrived.setdefault(header_of(raw, "In-Reply-To"), time.time())
            return reply

        self.handler.handle_DATA = handle_data  # type: ignore[method-assign]


def rush_config(data_dir: Path, dovecot: DovecotServer, sink: SmtpSink, workers: int, idle: bool) -> dict[str, Any]:
    return local_config(
        data_dir,
        (dovecot.host, dovecot.port),
        (sink.host, sink.port),
        PASSWORD_ENV,
        processing={"workers": workers},
        mailbox={"idle": idle, "poll_interval_s": 1.0},
        # a rush of thousands within the hour measures throughput: the answer caps must not hold it back
        security=RUSH_CAPS,
    )


RUSH_CAPS = {
    "max_answers_per_hour": 1_000_000,
    "max_answers_per_day": 1_000_000,
    "max_answers_per_domain_per_day": 1_000_000,
}


def append_all(dovecot: DovecotServer, load: Sequence[Planned], label: str) -> dict[str, float]:
    """Plain APPENDs, one connection per account; returns when each Message-ID was in the mailbox."""
    clients: dict[str, imapclient.IMAPClient] = {}
    appended: dict[str, float] = {}
    step = max(1, len(load) // 10)
    try:
        for index, planned in enumerate(load, 1):
            client = clients.get(planned.user)
            if client is None:
                client = clients[planned.user] = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False)
                client.login(planned.user, PASSWORD)
            client.append("INBOX", planned.raw, msg_time=planned.arrival)
            appended[planned.message_id] = time.time()
            if index % step == 0 or index == len(load):
                print(f"  {label}: appended {index}/{len(load)}", flush=True)
    finally:
        for client in clients.values():
            client.logout()
    return appended


# --- measurements ----------------------------------------------------------------------------------


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
    """One ``run_once`` in this (fresh) process; returned as plain data for the parent."""
    settings = parse_settings(raw_config, "rush configuration")
    with Bot(settings, inline=inline) as bot:
        started_wall, started = time.time(), time.perf_counter()
        cpu_before = _cpu_s(resource.RUSAGE_SELF)
        summary = bot.run_once()
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


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


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


# --- the scenarios ---------------------------------------------------------------------------------


@contextmanager
def servers(users: Sequence[str]) -> Iterator[tuple[DovecotServer, TimedSink]]:
    with DovecotServer(dict.fromkeys(users, PASSWORD)) as dovecot, TimedSink() as sink:
        yield dovecot, sink


def batch(args: argparse.Namespace, settings: Settings, pdfs: dict[str, list[bytes]]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    load = build_load(settings, args.n, pdfs, rng, timedelta(hours=48), args.pdf_share)
    kinds = Counter(p.kind for p in load)
    print(f"load: {len(load)} messages, " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
    users = sorted({box.user for box in settings.mailbox})
    modes = {"pool": [False], "single": [True], "both": [False, True]}[args.mode]
    runs: list[BotRun] = []
    with servers(users) as (dovecot, sink), tempfile.TemporaryDirectory(prefix="rush-data-") as data_root:
        appended = append_all(dovecot, load, "batch")
        appends_done = time.time()
        time.sleep(0.5)  # Dovecot reaps the appending imap processes: their CPU is not the floor's
        # once before the bot and once after: on a shared machine the speed drifts during an
        # invocation, and a floor measured only at one end would tilt the ratio
        print("running the floor …", flush=True)
        floors = [floor(dovecot, users)]
        for inline in modes:
            data_dir = Path(data_root) / ("single" if inline else "pool")
            config = rush_config(data_dir, dovecot, sink, args.workers, idle=False)
            print(f"running the bot ({'single process' if inline else f'{args.workers} parser workers'}) …")
            run = run_bot_isolated(config, inline, dovecot.pid)
            attach_latencies(run, load, appended, appends_done, sink)
            runs.append(run)
        print("running the floor again …", flush=True)
        floors.append(floor(dovecot, users))
    return summarise(args, load, runs, mean_floor(floors))


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


def steady(args: argparse.Namespace, settings: Settings, pdfs: dict[str, list[bytes]]) -> dict[str, Any]:
    """RATE messages a second for S seconds into a mailbox the running bot watches with IDLE."""
    rng = random.Random(args.seed + 1)
    count = max(1, round(args.steady * args.seconds))
    load = build_load(settings, count, pdfs, rng, timedelta(minutes=30), args.pdf_share)
    users = sorted({box.user for box in settings.mailbox})
    with servers(users) as (dovecot, sink), tempfile.TemporaryDirectory(prefix="rush-steady-") as data_dir:
        config = rush_config(Path(data_dir), dovecot, sink, args.workers, idle=True)
        bot = Bot(parse_settings(config, "rush configuration"))
        runner = threading.Thread(target=bot.run_forever, name="rush-bot", daemon=True)
        runner.start()
        appended: dict[str, float] = {}
        clients = {user: imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False) for user in users}
        try:
            for client, user in zip(clients.values(), clients, strict=True):
                client.login(user, PASSWORD)
            time.sleep(2.0)  # let the intake threads reach IDLE before the first arrival
            started = time.monotonic()
            for index, planned in enumerate(load):
                time.sleep(max(0.0, started + index / args.steady - time.monotonic()))
                clients[planned.user].append("INBOX", planned.raw, msg_time=planned.arrival)
                appended[planned.message_id] = time.time()
            print(f"  steady: appended {len(load)} in {time.monotonic() - started:.1f} s; waiting for answers …")
            expected = {p.message_id for p in load if p.answered}
            deadline = time.monotonic() + max(60.0, args.seconds)
            while time.monotonic() < deadline and not expected <= sink.arrived.keys():
                time.sleep(0.2)
        finally:
            for client in clients.values():
                client.logout()
            bot.stop()
            runner.join(timeout=90)
            bot.close()
    latencies = [sink.arrived[m] - appended[m] for m in expected if m in sink.arrived]
    return {
        "rate_per_s": args.steady,
        "seconds": args.seconds,
        "messages": len(load),
        "acknowledged": len(latencies),
        "unanswered": len(expected) - len(latencies),
        "p50_latency_s": percentile(latencies, 0.5),
        "p95_latency_s": percentile(latencies, 0.95),
        "max_latency_s": max(latencies, default=float("nan")),
    }


# --- output ----------------------------------------------------------------------------------------


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


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is between 0 and 1, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="messages in the batch (default 200)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--workers", type=int, default=2, help="parser processes of the pool run (default 2)")
    parser.add_argument("--mode", choices=["pool", "single", "both"], default="both")
    parser.add_argument(
        "--pdf-share",
        type=_share,
        default=DEFAULT_PDF_SHARE,
        help=f"share of first submissions carrying a PDF form (default {DEFAULT_PDF_SHARE}; 0 = Word forms only)",
    )
    parser.add_argument(
        "--pdf-forms",
        type=int,
        default=None,
        help="PDF forms made per call (default: enough that each is sent about three times, as revisions are)",
    )
    parser.add_argument("--steady", type=float, help="messages per second of the steady scenario")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady scenario")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    os.environ[PASSWORD_ENV] = PASSWORD
    settings = parse_settings(
        local_config(Path(tempfile.gettempdir()), ("127.0.0.1", 1), ("127.0.0.1", 1), PASSWORD_ENV),
        "rush configuration",
    )
    # each PDF names one applicant: reused too often, it turns the load into one person's revisions
    if args.pdf_share == 0:
        per_call = 0  # the Word-only load: no LibreOffice run at all
    elif args.pdf_forms is not None:
        per_call = args.pdf_forms
    else:
        per_call = max(4, math.ceil(args.n * args.pdf_share / len(settings.call) / 3))
    pdfs = pdf_forms(list(settings.call), per_call, random.Random(args.seed)) if per_call else {}
    summary = batch(args, settings, pdfs)
    if args.steady:
        print(f"steady scenario: {args.steady}/s for {args.seconds} s …", flush=True)
        summary["steady"] = steady(args, settings, pdfs)
    print_table(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"\nsummary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
