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


def convert(data: bytes, source_extension: str, target: str, filename: str, timeout_s: float) -> bytes:
    """``data`` converted to ``target`` ("docx" or "pdf"); raises CannotRead on any failure."""
    binary = office_binary()
    if binary is None:
        raise CannotRead(
            Unreadable("unsupported-format", filename, f"no reader for .{source_extension}: {INSTALL_HINT}")
        )
    with tempfile.TemporaryDirectory(prefix="mailbot-convert-") as folder:
        work = Path(folder)
        source = work / f"input.{source_extension}"
        source.write_bytes(data)
        out = work / "out"
        command = [
            binary,
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--nolockcheck",
            "--convert-to",
            target,
            "--outdir",
            str(out),
            str(source),
        ]
        try:
            completed = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False, cwd=work)
        except subprocess.TimeoutExpired:
            raise CannotRead(Unreadable("timeout", filename, f"LibreOffice took over {timeout_s:.0f} s")) from None
        except OSError as exc:
            raise CannotRead(Unreadable("unsupported-format", filename, f"LibreOffice did not start: {exc}")) from None
        produced = out / f"input.{target}"
        if not produced.is_file():
            detail = (completed.stderr or completed.stdout).decode("utf-8", "replace").strip()[-300:]
            raise CannotRead(
                Unreadable("corrupt", filename, f"LibreOffice could not convert it: {detail or 'no output'}")
            )
        return produced.read_bytes()


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
