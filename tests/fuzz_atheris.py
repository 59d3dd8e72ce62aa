"""Coverage-guided fuzzing of the readers with atheris (optional; ``pip install atheris``).

Not collected by pytest; run it from the repository root with ``python -m``. The properties are
those of ``tests/test_fuzz.py``; a broken one is a Python exception, which libFuzzer reports and
saves as ``crash-<hash>``. Copy such a file to ``tests/fixtures/fuzz/`` (``.eml`` for a message) so
that ``test_regression_inputs`` replays it.

Targets: ``message`` (the bytes are a mail message), ``document`` (the bytes are an attached file,
its name chosen by the first byte), ``word-xml`` (the bytes are ``word/document.xml`` of a real
form's package), ``pdf`` (the bytes are a PDF). Start from the seeds::

    .venv/bin/python -m tests.fuzz_atheris seeds /tmp/fuzz-seeds
    .venv/bin/python -m tests.fuzz_atheris pdf /tmp/fuzz-seeds/pdf -atheris_runs=200000 \\
        -max_len=262144 -rss_limit_mb=2048 -timeout=30

Legacy formats are refused without LibreOffice, as in the hypothesis tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
import pytest

with atheris.instrument_imports(include=["parsers"]):
    import parsers.documents
    from parsers import read_document, read_message

from parsers.errors import CannotRead
from parsers.model import Unreadable
from tests.test_fuzz import FORM_DOCX, FORM_PARTS, FORM_PDF, SPEC, check_reading, check_submission, package
from tests.test_hostile_security import hostile_messages

NAMES = ["申请表.docx", "form.pdf", "材料.zip", "form.rtf", "scan.jpg", "notes.txt", "x", ""]


def _refuse(data: bytes, source_extension: str, target: str, filename: str, timeout_s: float) -> bytes:
    raise CannotRead(Unreadable("unsupported-format", filename, "not converted while fuzzing"))


def _message(data: bytes) -> None:
    check_submission(read_message(data, SPEC))


def _document(data: bytes) -> None:
    name = NAMES[data[0] % len(NAMES)] if data else ""
    check_reading(read_document(data[1:], name, SPEC))


def _word_xml(data: bytes) -> None:
    check_reading(read_document(package({"word/document.xml": data}), "申请表.docx", SPEC))


def _pdf(data: bytes) -> None:
    check_reading(read_document(data, "申请表.pdf", SPEC))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "message": _message,
    "document": _document,
    "word-xml": _word_xml,
    "pdf": _pdf,
}


def write_seeds(folder: Path) -> None:
    """One folder of starting inputs per target."""
    seeds = {
        "message": hostile_messages(),
        "document": {"docx": b"\x00" + FORM_DOCX, "pdf": b"\x01" + FORM_PDF},
        "word-xml": {"document": FORM_PARTS["word/document.xml"]},
        "pdf": {"form": FORM_PDF},
    }
    for target, files in seeds.items():
        (folder / target).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / target / name).write_bytes(data)
    print(f"seeds written under {folder}")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in {*TARGETS, "seeds"}:
        raise SystemExit(f"usage: {argv[0]} {{{'|'.join(TARGETS)}|seeds DIR}} [libFuzzer options] [corpus]")
    if argv[1] == "seeds":
        write_seeds(Path(argv[2]))
        return
    patch = pytest.MonkeyPatch()
    patch.setattr(parsers.documents, "convert", _refuse)
    patch.setattr(parsers.documents, "ocr_engine", lambda: None)
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
