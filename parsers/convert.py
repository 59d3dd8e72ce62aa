"""Legacy word-processor files (.doc, .wps, .rtf, .odt) to .docx through LibreOffice, when installed.

Each conversion runs headless in a throw-away profile directory, under a time limit, in a
temporary folder of its own; the input is written there under a fixed name, never its own.

Word 97-2003 and WPS files are also read without LibreOffice (parsers.word97); which of the two
is used is ``Limits.legacy_word``.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pikepdf

from parsers.errors import CannotRead
from parsers.model import Unreadable

log = logging.getLogger(__name__)

_OFFICE_NAMES = ("soffice", "libreoffice")
INSTALL_HINT = "install LibreOffice (Debian: apt-get install libreoffice-writer) so that soffice is on PATH"


def office_binary() -> str | None:
    for name in _OFFICE_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# documents one LibreOffice run converts (starting it costs more than converting a form), and the
# seconds each adds to the run's time limit beyond the one document's limit
CONVERT_BATCH = 25
BATCH_SECONDS_EACH = 10.0


def convert(data: bytes, source_extension: str, target: str, filename: str, timeout_s: float) -> bytes:
    """``data`` converted to ``target`` ("docx" or "pdf"); raises CannotRead on any failure."""
    binary = _binary_or_raise(source_extension, filename)
    with tempfile.TemporaryDirectory(prefix="mailbot-convert-") as folder:
        work = Path(folder)
        source = work / f"input.{source_extension}"
        source.write_bytes(data)
        try:
            completed = _run_office(binary, work, [source], target, timeout_s)
        except subprocess.TimeoutExpired:
            raise CannotRead(Unreadable("timeout", filename, f"LibreOffice took over {timeout_s:.0f} s")) from None
        except OSError as exc:
            raise CannotRead(Unreadable("unsupported-format", filename, f"LibreOffice did not start: {exc}")) from None
        produced = _output_of(work, source, target)
        if not produced.is_file():
            detail = (completed.stderr or completed.stdout).decode("utf-8", "replace").strip()[-300:]
            raise CannotRead(
                Unreadable("corrupt", filename, f"LibreOffice could not convert it: {detail or 'no output'}")
            )
        return produced.read_bytes()


def convert_many(
    documents: Sequence[tuple[bytes, str, str]], target: str, timeout_s: float, batch: int = CONVERT_BATCH
) -> list[bytes | CannotRead]:
    """Each of ``documents`` (data, source extension, filename) converted to ``target``, in order:
    its bytes, or why it could not be.

    One LibreOffice run converts up to ``batch`` of them, within ``timeout_s`` and
    ``BATCH_SECONDS_EACH`` more for each. What a run leaves unconverted is converted again alone
    (``convert``), so a document LibreOffice cannot take, or that stops it, fails alone and with
    its own reason. After a run that overran or failed, the last file it wrote may be incomplete:
    only the files it wrote before that one are kept (it converts in the order given).
    """
    results: list[bytes | CannotRead | None] = [None] * len(documents)
    binary = office_binary() if documents else None
    if binary is not None:
        for start in range(0, len(documents), batch):
            _convert_batch(
                binary, documents, range(start, min(start + batch, len(documents))), target, timeout_s, results
            )
    for number, (data, extension, filename) in enumerate(documents):
        if results[number] is None:
            try:
                results[number] = convert(data, extension, target, filename, timeout_s)
            except CannotRead as exc:
                results[number] = exc
    return [result for result in results if result is not None]


def _convert_batch(
    binary: str,
    documents: Sequence[tuple[bytes, str, str]],
    numbers: range,
    target: str,
    timeout_s: float,
    results: list[bytes | CannotRead | None],
) -> None:
    """One LibreOffice run over ``documents[numbers]``, filling ``results`` with what it surely converted."""
    with tempfile.TemporaryDirectory(prefix="mailbot-convert-") as folder:
        work = Path(folder)
        sources = []
        for number in numbers:
            data, extension, _filename = documents[number]
            sources.append(work / f"input-{number:06d}.{extension}")
            sources[-1].write_bytes(data)
        try:
            completed = _run_office(binary, work, sources, target, timeout_s + BATCH_SECONDS_EACH * len(sources))
            clean = completed.returncode == 0
        except subprocess.TimeoutExpired:
            clean = False
        except OSError:
            return  # each is tried alone, and says why
        produced = [_output_of(work, source, target).is_file() for source in sources]
        trusted = len(produced) if clean else max((i for i, done in enumerate(produced) if done), default=0)
        for position, number in enumerate(numbers):
            if produced[position] and position < trusted:
                results[number] = _output_of(work, sources[position], target).read_bytes()


def _binary_or_raise(source_extension: str, filename: str) -> str:
    binary = office_binary()
    if binary is None:
        raise CannotRead(
            Unreadable("unsupported-format", filename, f"no reader for .{source_extension}: {INSTALL_HINT}")
        )
    return binary


def _run_office(
    binary: str, work: Path, sources: Sequence[Path], target: str, timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    """LibreOffice headless in a throw-away profile under ``work``, converting ``sources`` into ``work/out``."""
    command = [
        binary,
        f"-env:UserInstallation={(work / 'profile').as_uri()}",
        "--headless",
        "--norestore",
        "--nolockcheck",
        "--convert-to",
        target,
        "--outdir",
        str(work / "out"),
        *map(str, sources),
    ]
    return subprocess.run(command, capture_output=True, timeout=timeout_s, check=False, cwd=work)


def _output_of(work: Path, source: Path, target: str) -> Path:
    return work / "out" / f"{source.stem}.{target}"


def reproducible_pdf(data: bytes, created: datetime) -> bytes:
    """A PDF LibreOffice wrote, made the same bytes for the same document: dated ``created``.

    LibreOffice stamps each PDF with the time of the conversion and a random file identifier
    (the trailer's /ID, PDF 32000-1 §14.4) and adds its own /DocChecksum to the trailer, so the
    same form converted twice differs. The document information dictionary's dates (§14.3.3) are
    set to ``created``, the two trailer keys dropped, and qpdf writes the file again with an
    identifier computed from its contents. A PDF qpdf cannot open is returned as it came.
    """
    stamp = pikepdf.String("D:" + created.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "Z")
    try:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            pdf.docinfo["/CreationDate"] = stamp
            if "/ModDate" in pdf.docinfo:
                pdf.docinfo["/ModDate"] = stamp
            for key in ("/ID", "/DocChecksum"):
                if key in pdf.trailer:
                    del pdf.trailer[key]
            written = io.BytesIO()
            pdf.save(written, deterministic_id=True)
    except pikepdf.PdfError as exc:
        log.warning("a converted PDF could not be made reproducible (%s): kept as LibreOffice wrote it", exc)
        return data
    return written.getvalue()
