"""Optional OCR of scanned form pages: RapidOCR when importable, else tesseract with chi_sim.

Neither is a dependency: without one, an image-only PDF is reported as "scanned".
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@cache
def engine() -> str | None:
    """ "rapidocr", "tesseract" or None."""
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        pass
    else:
        return "rapidocr"
    binary = shutil.which("tesseract")
    if binary is None:
        return None
    try:
        languages = subprocess.run([binary, "--list-langs"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "tesseract" if b"chi_sim" in languages else None


def ocr_pdf_pages(data: bytes, pages: int, timeout_s: float) -> list[str]:
    """The text of the first ``pages`` pages, one string per page; empty when no engine is there."""
    which = engine()
    if which is None:
        return []
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    try:
        images = [document[number].render(scale=2.5).to_pil() for number in range(min(pages, len(document)))]
    finally:
        document.close()
    return [_recognise(which, image, timeout_s) for image in images]


def _recognise(which: str, image: Any, timeout_s: float) -> str:
    if which == "rapidocr":
        result = _rapid()(image)
        texts = getattr(result, "txts", None) or ()
        return "\n".join(str(text) for text in texts)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    binary = shutil.which("tesseract") or "tesseract"
    completed = subprocess.run(
        [binary, "stdin", "stdout", "-l", "chi_sim+eng", "--psm", "6"],
        input=buffer.getvalue(),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    return completed.stdout.decode("utf-8", "replace")


@cache
def _rapid() -> Any:
    from rapidocr import RapidOCR

    return RapidOCR()
