"""Word 97-2003 forms read natively and through LibreOffice: time per document and agreement.

    python -m benchmarks.legacy_word [--corpus DIR] [--limit N] [--json FILE]

The filled .docx forms of the corpus (the attachment each truth names) are converted to Word 97
format by one LibreOffice run (not timed). Each .doc is then read to fields the two ways
``Limits.legacy_word`` offers, as the pipeline reads an attachment: ``native`` (parsers.word97)
and ``libreoffice`` (a headless conversion to .docx, then the .docx reader). Printed: seconds per
document for each (median, mean, slowest), how many documents give exactly the truth's fields
and how many give the same fields both ways. Needs LibreOffice (``soffice``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailbot.config import load_settings
from parsers.documents import read_document
from parsers.limits import LegacyWordReader, Limits
from parsers.message import extract_parts
from parsers.model import FormReading
from parsers.spec import FormSpec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dev"


@dataclass(frozen=True)
class LegacyForm:
    name: str
    call: str
    filename: str
    doc: bytes
    fields: dict[str, Any]


Source = tuple[str, str, str, bytes, dict[str, Any]]  # message, call, form name, .docx bytes, truth fields


def docx_forms(corpus: Path, limit: int) -> list[Source]:
    """The first ``limit`` .docx forms of the corpus with their truth."""
    found: list[Source] = []
    for truth_file in sorted(corpus.glob("*.json")):
        if truth_file.name == "manifest.json" or len(found) >= limit:
            continue
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        form = truth.get("form") or {}
        if form.get("format") != "docx" or not truth.get("fields"):
            continue
        raw = (corpus / f"{truth_file.stem}.eml").read_bytes()
        for attachment, data in extract_parts(raw):
            if attachment.filename == form["attachment"]:
                found.append((truth_file.stem, truth["call"], attachment.filename, data, truth["fields"]))
                break
    return found


def to_doc(soffice: str, documents: list[bytes]) -> list[bytes]:
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-doc-") as folder:
        work = Path(folder)
        for number, data in enumerate(documents):
            (work / f"form{number}.docx").write_bytes(data)
        command = [soffice, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless"]
        command += ["--convert-to", "doc:MS Word 97", "--outdir", str(work / "out")]
        command += [str(work / f"form{number}.docx") for number in range(len(documents))]
        subprocess.run(command, capture_output=True, timeout=1800, check=True)
        return [(work / "out" / f"form{number}.doc").read_bytes() for number in range(len(documents))]


def timed_reading(form: LegacyForm, spec: FormSpec, reader: LegacyWordReader) -> tuple[float, dict[str, Any] | None]:
    started = time.perf_counter()
    reading = read_document(form.doc, form.filename, spec, Limits(legacy_word=reader))
    seconds = time.perf_counter() - started
    if not isinstance(reading, FormReading):
        return seconds, None
    return seconds, {name: reading.value(name) for name in form.fields}


def describe(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(seconds), 4),
        "mean_s": round(statistics.fmean(seconds), 4),
        "slowest_s": round(max(seconds), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=12, help="forms to convert and read (default 12)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args(argv)
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        print("LibreOffice (soffice) is needed to make the .doc files and for the comparison", file=sys.stderr)
        return 2
    settings = load_settings(REPO / "config.example.toml")
    sources = docx_forms(options.corpus, options.limit)
    docs = to_doc(soffice, [data for _, _, _, data, _ in sources])
    forms = [
        LegacyForm(name, call, filename.rsplit(".", 1)[0] + ".doc", doc, fields)
        for (name, call, filename, _, fields), doc in zip(sources, docs, strict=True)
    ]
    times: dict[LegacyWordReader, list[float]] = {"native": [], "libreoffice": []}
    right = {"native": 0, "libreoffice": 0}
    agree = 0
    for form in forms:
        spec = settings.call_by_id(form.call).form_spec
        values: dict[LegacyWordReader, dict[str, Any] | None] = {}
        for reader in times:
            seconds, values[reader] = timed_reading(form, spec, reader)
            times[reader].append(seconds)
            right[reader] += values[reader] == form.fields
        agree += values["native"] == values["libreoffice"]
    result = {
        "documents": len(forms),
        "bytes_mean": round(statistics.fmean(len(form.doc) for form in forms)) if forms else 0,
        "native": describe(times["native"]) | {"exact_fields": right["native"]},
        "libreoffice": describe(times["libreoffice"]) | {"exact_fields": right["libreoffice"]},
        "same_fields_both_ways": agree,
        "libreoffice_over_native": round(
            statistics.median(times["libreoffice"]) / statistics.median(times["native"]), 1
        ),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if options.json:
        options.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
