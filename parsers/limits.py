"""Bounds on what one message may make the readers do."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

MIB = 1024 * 1024
log = logging.getLogger(__name__)

LegacyWordReader = Literal["auto", "native", "libreoffice"]
LEGACY_WORD_ENV = "MAILBOT_LEGACY_WORD"
_LEGACY_WORD_READERS: dict[str, LegacyWordReader] = {"auto": "auto", "native": "native", "libreoffice": "libreoffice"}


def legacy_word_from_environment() -> LegacyWordReader:
    """MAILBOT_LEGACY_WORD: how .doc and .wps files are read; an unknown value is logged and read as auto.

    ``auto`` (the default) converts with LibreOffice when it is installed and reads natively when it
    is not or when the conversion fails; ``native`` never starts LibreOffice; ``libreoffice`` uses
    only LibreOffice (for comparing the two).
    """
    chosen = os.environ.get(LEGACY_WORD_ENV, "auto").strip().lower() or "auto"
    reader = _LEGACY_WORD_READERS.get(chosen)
    if reader is None:
        log.warning("%s=%r is not one of auto, native, libreoffice; using auto", LEGACY_WORD_ENV, chosen)
        return "auto"
    return reader


@dataclass(frozen=True)
class Limits:
    """Every size, count and time the readers respect; a file beyond one is refused, never half-read."""

    max_message_bytes: int = 60 * MIB
    max_attachment_bytes: int = 40 * MIB
    max_mime_depth: int = 12
    max_mime_parts: int = 400
    archive_max_members: int = 200
    archive_max_total_bytes: int = 200 * MIB
    archive_max_ratio: float = 150.0  # uncompressed / compressed, per member, beyond a few KiB
    archive_max_depth: int = 2  # archives inside archives
    docx_max_xml_bytes: int = 64 * MIB  # the uncompressed XML of one Word package (media count in the total)
    pdf_max_pages: int = 60  # pages whose text is looked at
    pdf_max_form_pages: int = 4  # pages laid out into tables
    body_text_chars: int = 20_000
    doc_max_pieces: int = 20_000  # pieces of a Word 97-2003 piece table (one per edit, at worst)
    doc_max_chars: int = 2_000_000  # characters of a Word 97-2003 document's main text and text boxes
    convert_timeout_s: float = 90.0  # LibreOffice converting one legacy document
    ocr_max_pages: int = 3
    # taken when the limits are made (in the parent), so that reading workers started earlier follow it
    legacy_word: LegacyWordReader = field(default_factory=legacy_word_from_environment)
