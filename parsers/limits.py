"""Bounds on what one message may make the readers do."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


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
    convert_timeout_s: float = 90.0  # LibreOffice converting one legacy document
    ocr_max_pages: int = 3
