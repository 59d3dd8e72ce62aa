"""Rendering Word forms as PDF for ``mailbot bundle --pdf``: one LibreOffice run per form, or per batch.

    python -m benchmarks.pdf_renderings [--forms N] [--batch B]

N filled-in forms of the first example call (``mailbot.samples.form_document``, default 40) are
converted to PDF twice, each way timed once: ``one by one`` (``parsers.convert.convert``: a
LibreOffice start per form, as bundles were built before) and ``in batches`` (``convert_many``:
one start per B forms, the default ``CONVERT_BATCH``). Printed: seconds in all and per form, and
how many came back. Needs LibreOffice (``soffice``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mailbot.config import parse_settings
from mailbot.demo import local_config
from mailbot.samples import form_document
from parsers.convert import CONVERT_BATCH, convert, convert_many, office_binary
from parsers.errors import CannotRead

TIMEOUT_S = 90.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forms", type=int, default=40, help="forms to render (default 40)")
    parser.add_argument("--batch", type=int, default=CONVERT_BATCH, help=f"forms per run (default {CONVERT_BATCH})")
    args = parser.parse_args(argv)
    if office_binary() is None:
        print("LibreOffice (soffice) is not installed", file=sys.stderr)
        return 1
    settings = parse_settings(
        local_config(Path(tempfile.gettempdir()), ("127.0.0.1", 1), ("127.0.0.1", 1), "MAILBOT_UNUSED"), "benchmark"
    )
    call = settings.call[0]
    documents = [
        (form_document(call, {"applicant_name": f"申请人{n}", "project_title": f"项目{n}"}), "docx", f"form-{n}.docx")
        for n in range(args.forms)
    ]
    started = time.perf_counter()
    alone = 0
    for data, extension, filename in documents:
        try:
            convert(data, extension, "pdf", filename, TIMEOUT_S)
            alone += 1
        except CannotRead:
            pass
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    together = sum(isinstance(result, bytes) for result in convert_many(documents, "pdf", TIMEOUT_S, args.batch))
    in_batches = time.perf_counter() - started
    print(f"{args.forms} forms      seconds  per form  converted")
    print(f"one by one     {one_by_one:7.1f}  {one_by_one / args.forms:8.2f}  {alone:9d}")
    print(f"in batches of {args.batch:<2d}{in_batches:6.1f}  {in_batches / args.forms:8.2f}  {together:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
