"""Legacy word-processor files (.doc, .wps, .rtf, .odt) to .docx through LibreOffice, when installed.

Each conversion runs headless in a throw-away profile directory, under a time limit, in a
temporary folder of its own; the input is written there under a fixed name, never its own.

Word 97-2003 and WPS files are also read without LibreOffice (parsers.word97); which of the two
is used is ``Limits.legacy_word``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

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
