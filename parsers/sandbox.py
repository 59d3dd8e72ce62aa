"""Reading mail from strangers in worker processes with a memory limit and a wall-clock limit.

Each worker is a child of a forkserver (never a fork of the threaded parent) that reads one message
at a time with ``RLIMIT_AS`` set. A supervising thread per worker hands it a job and waits at most
``timeout_s``; a worker that overruns is killed and replaced, one that dies (out of memory, or a
native library crashing on a hostile file) is replaced too. Such a job still resolves: to a
Submission whose envelope comes from the header block (read with the attachment list in a fresh
limited child, never by decoding the message in the parent), so the message can be decided, with
``unreadable.reason`` "timeout" or "too-large" (or "corrupt" for a crash).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType

from parsers.headers import header_block, read_headers
from parsers.limits import Limits
from parsers.message import extract_parts, read_message
from parsers.model import Attachment, Envelope, Submission, Unreadable, UnreadableReason
from parsers.spec import FormSpec

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_OUT_OF_MEMORY_SIGNALS = (signal.SIGKILL, signal.SIGABRT)
READER_NICENESS = 10


def _context() -> BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["parsers.forkserver_setup", "parsers.message", "parsers.nlp", *_main_module()])
        return context
    return multiprocessing.get_context("spawn")


def _main_module() -> list[str]:
    """The program's main module, as the forkserver preloads it.

    Every child of the forkserver runs the program's main module again before its target (as
    spawn does); loaded once in the forkserver, what it imports is already there in each child,
    instead of each worker importing the whole program again (measured: about 0.8 s of CPU).
    """
    main = sys.modules["__main__"]
    name = getattr(main.__spec__, "name", None)
    if name is not None:
        # a package's __main__ is never run again in a child
        return [] if name == "__main__" or name.endswith(".__main__") else [name]
    # a script: the forkserver loads "__main__" from the script's path
    return ["__main__"] if getattr(main, "__file__", None) else []


def _address_space() -> int:
    """The process's current virtual size in bytes (Linux), 0 when unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def limit_memory(memory_mb: int) -> None:
    """Cap the address space at what is mapped now plus ``memory_mb``: the allowance is all for reading."""
    import resource

    allowance = _address_space() + memory_mb * _MIB
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = allowance if hard == resource.RLIM_INFINITY else min(allowance, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot limit the parser's memory: %s", exc)


def lower_priority() -> None:
    """Lower this reader's priority: on a busy machine intake, deciding and sending go first.

    Reading is bulk work that a queue absorbs; what applicants wait for (an answer) and what the
    office relies on (mail archived as it arrives) must not wait behind it for a core.
    """
    try:
        os.nice(READER_NICENESS)
    except OSError as exc:
        log.warning("cannot lower the parser's priority: %s", exc)


class _KeptRecords(logging.Handler):
    """A job's log records, kept to travel back with its result.

    A worker has no handler of its own (it would write raw lines past the parent's format, level
    and filters); the parent hands these records to its own loggers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kept = logging.makeLogRecord(record.__dict__)
            kept.msg, kept.args = record.getMessage(), None  # arguments may not pickle
            if record.exc_info:
                kept.exc_text = logging.Formatter().formatException(record.exc_info)
            kept.exc_info = None
            self.records.append(kept)
        except Exception:
            self.handleError(record)

    def take(self) -> list[logging.LogRecord]:
        taken, self.records = self.records, []
        return taken


def _worker_main(connection: Connection, memory_mb: int, limits: Limits, log_level: int) -> None:
    """Read jobs until told to stop."""
    # loaded before the limit is set, so the limit is all for reading: an import that fails under
    # the cap ends in a SystemError, not a MemoryError, and would be reported as a corrupt file
    import parsers.docx_reader
    import parsers.nlp

    parsers.docx_reader.load_word_library()

    kept = _KeptRecords()
    root = logging.getLogger()
    root.handlers = [kept]
    root.setLevel(log_level)
    limit_memory(memory_mb)
    lower_priority()
    while True:
        try:
            job = connection.recv()
            if job is None:
                return
            source, spec = job
            submission = read_message(_bytes_of(source), spec, limits)
            connection.send(("ok", submission, kept.take()))
        except (EOFError, OSError):
            return
        except MemoryError:
            kept.records.clear()
            with contextlib.suppress(OSError, MemoryError):
                connection.send(("memory", None, []))
            return


# a message's bytes, or the file that holds them: the worker reads a file itself, so a large
# message is neither held by the submitting process nor copied through the pipe
Source = bytes | Path


def _bytes_of(source: Source) -> bytes:
    return source.read_bytes() if isinstance(source, Path) else source


@dataclass
class _Job:
    source: Source
    spec: FormSpec
    future: Future[Submission]


class _Worker:
    def __init__(self, context: BaseContext, memory_mb: int, limits: Limits) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child, memory_mb, limits, logging.getLogger().getEffectiveLevel()),
            daemon=True,
            name="mailbot-parser",
        )
        try:
            self.process.start()
        except BaseException:
            self.connection.close()  # no process: neither end of its pipe is used
            raise
        finally:
            child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


class ParserPool:
    """``read_message`` in ``workers`` processes (0: one per core), each job bounded in time and memory."""

    def __init__(
        self, workers: int = 0, timeout_s: float = 60.0, memory_mb: int = 1024, limits: Limits | None = None
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.limits = limits or Limits()
        self._context = _context()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._supervise, name=f"parser-supervisor-{number}", daemon=True)
            for number in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, source: Source, spec: FormSpec) -> Future[Submission]:
        if self._closed:
            raise RuntimeError("the parser pool is closed")
        future: Future[Submission] = Future()
        self._jobs.put(_Job(source, spec, future))
        return future

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _supervise(self) -> None:
        worker = self._start_worker()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                if worker is None:
                    worker = _Worker(self._context, self.memory_mb, self.limits)
                submission, healthy = self._run(worker, job)
            except Exception as exc:  # the job must resolve whatever happens to its worker
                log.exception("parser worker failed")
                submission, healthy = self._contained(job, "corrupt", f"the parser worker failed: {exc}"), False
            if not healthy and worker is not None:
                worker.kill()
                worker = None
            job.future.set_result(submission)
        if worker is not None:
            worker.stop()

    def _start_worker(self) -> _Worker | None:
        """A worker started before the first job arrives (starting one takes a while), if it starts."""
        try:
            return _Worker(self._context, self.memory_mb, self.limits)
        except Exception:
            log.exception("parser worker did not start; trying again with the first message")
            return None

    def _run(self, worker: _Worker, job: _Job) -> tuple[Submission, bool]:
        try:
            worker.connection.send((job.source, job.spec))
            if not worker.connection.poll(self.timeout_s):
                detail = f"reading took over {self.timeout_s:g} s; the reader was stopped"
                return self._contained(job, "timeout", detail), False
            status, payload, records = worker.connection.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=5)
            return self._died(job, worker.process.exitcode), False
        for record in records:
            logging.getLogger(record.name).handle(record)
        if status == "ok" and isinstance(payload, Submission):
            return payload, True
        return self._contained(job, "too-large", f"reading needed over {self.memory_mb} MiB"), False

    def _died(self, job: _Job, exitcode: int | None) -> Submission:
        if exitcode is not None and -exitcode in _OUT_OF_MEMORY_SIGNALS:
            return self._contained(job, "too-large", f"the reader exceeded {self.memory_mb} MiB (exit {exitcode})")
        return self._contained(job, "corrupt", f"the reader crashed on this message (exit {exitcode})")

    def _contained(self, job: _Job, reason: UnreadableReason, detail: str) -> Submission:
        """What can be known without reading the documents: the header block and the list of attachments.

        The message just stopped (or killed) a reader: it is not decoded again in this process. A
        fresh child with the same memory limit and a short time limit lists what it can; if that
        fails too, this process reads the header block alone, and no more than its first bytes.
        """
        log.warning("message not read: %s: %s", reason, detail)
        envelope, attachments = self._headers_and_attachments(job.source)
        return Submission(
            envelope=envelope,
            attachments=attachments,
            unreadable=Unreadable(reason, "(message)", detail),
            diagnostics=(detail,),
        )

    def _headers_and_attachments(self, source: Source) -> tuple[Envelope, tuple[Attachment, ...]]:
        parent, child = self._context.Pipe()
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_listing_main, args=(child, self.memory_mb, self.limits, source), daemon=True, name="mailbot-list"
        )
        started = False
        try:
            process.start()  # fails where no process can be made (the process limit, short memory)
            started = True
            child.close()
            if parent.poll(LISTING_TIMEOUT_S):
                envelope, attachments = parent.recv()
                return envelope, attachments
            log.warning("listing the attachments took over %g s; the header block alone is read", LISTING_TIMEOUT_S)
        except (EOFError, OSError, ValueError):
            log.warning("listing the attachments failed; the header block alone is read")
        finally:
            if started:
                if process.is_alive():
                    process.kill()
                process.join(timeout=5)
            else:
                child.close()
            parent.close()
        return read_headers(header_block(_head_of(source))), ()


# a message that stopped a reader gets this long, in a fresh child, to give its headers and attachment list
LISTING_TIMEOUT_S = 20.0
# the last resort reads no more of a message than this in the supervising process
HEAD_BYTES = 256 * 1024


def _head_of(source: Source) -> bytes:
    if isinstance(source, Path):
        with source.open("rb") as file:
            return file.read(HEAD_BYTES)
    return source[:HEAD_BYTES]


def _listing_main(connection: Connection, memory_mb: int, limits: Limits, source: Source) -> None:
    """The header block and the attachment list of a message, in a child with the readers' memory limit."""
    limit_memory(memory_mb)
    lower_priority()
    raw = _bytes_of(source)
    envelope = read_headers(raw)
    attachments = tuple(attachment for attachment, _ in extract_parts(raw, limits))
    with contextlib.suppress(OSError):
        connection.send((envelope, attachments))


def read_message_contained(
    raw: bytes, spec: FormSpec, timeout_s: float = 60.0, memory_mb: int = 1024, limits: Limits | None = None
) -> Submission:
    """One message read in a fresh worker process, with the pool's limits."""
    with ParserPool(1, timeout_s, memory_mb, limits) as pool:
        return pool.submit(raw, spec).result()
