"""Converting documents with LibreOffice several at a time (``parsers.convert.convert_many``).

One LibreOffice run per batch instead of one per document: each document must still come back as
itself, in order, and a document LibreOffice cannot take must fail alone, with its own reason.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import docx
import pdfplumber
import pytest

from parsers import convert as convert_module
from parsers.convert import convert_many, office_binary
from parsers.errors import CannotRead
from tests.conftest import _missing
from tests.support.office_runs import counting_runs


def word_document(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    written = io.BytesIO()
    document.save(written)
    return written.getvalue()


def test_documents_converted_together_come_back_each_as_itself_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    if office_binary() is None:
        _missing("LibreOffice (soffice) is not installed")
    runs = counting_runs(monkeypatch)
    documents = [(word_document(f"申报表 第{n}份 marker-{n}"), "docx", f"form-{n}.docx") for n in range(4)]
    documents.insert(2, (b"PK\x03\x04 not really a Word file", "docx", "broken.docx"))

    results = convert_many(documents, "pdf", timeout_s=90, batch=2)

    assert len(results) == len(documents)
    for result, (_data, _extension, filename) in zip(results, documents, strict=True):
        if filename == "broken.docx":
            assert isinstance(result, CannotRead)
            assert result.reason.attachment == "broken.docx"
            assert result.reason.reason == "corrupt"
            continue
        assert isinstance(result, bytes), filename
        with pdfplumber.open(io.BytesIO(result)) as pdf:
            text = "".join(page.extract_text() or "" for page in pdf.pages)
        assert f"marker-{filename[5]}" in text, (filename, text)
    # three runs of up to two; then the one LibreOffice could not convert, alone (and the last
    # one of its run too, where LibreOffice's exit code says that run failed)
    assert runs[:3] == [2, 2, 1]
    assert runs[3:] in ([1], [1, 1]), runs


FAKE_OFFICE = """#!{python}
# Stands in for LibreOffice's process: converting several documents, it writes the first two
# outputs (the second only half) and hangs; converting one, it writes it whole and ends.
import sys, time
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--outdir") + 1])
out.mkdir(parents=True, exist_ok=True)
sources = [Path(a) for a in args[args.index("--outdir") + 2:]]
if len(sources) == 1:
    (out / (sources[0].stem + ".pdf")).write_bytes(b"alone:" + sources[0].read_bytes())
    sys.exit(0)
(out / (sources[0].stem + ".pdf")).write_bytes(b"together:" + sources[0].read_bytes())
(out / (sources[1].stem + ".pdf")).write_bytes(b"toge")
time.sleep(60)
"""


def test_after_a_run_that_overran_only_the_files_written_before_its_last_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped at its time limit may have been writing its last file: that one, and the ones
    it never reached, are converted again alone."""
    fake = tmp_path / "bin" / "soffice"
    fake.parent.mkdir()
    fake.write_text(FAKE_OFFICE.format(python=sys.executable), encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(convert_module, "BATCH_SECONDS_EACH", 0.0)
    documents = [(f"document {n}".encode(), "docx", f"form-{n}.docx") for n in range(4)]

    results = convert_many(documents, "pdf", timeout_s=3, batch=4)

    assert results == [
        b"together:document 0",
        b"alone:document 1",
        b"alone:document 2",
        b"alone:document 3",
    ]
