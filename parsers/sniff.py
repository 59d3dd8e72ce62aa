"""What a file is, told from its first bytes; the name only settles what the content leaves open."""

from __future__ import annotations

import io
import struct
import zipfile

from parsers.model import DocumentKind

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")
_WORD_STREAM = "WordDocument".encode("utf-16-le")
# [MS-OXMSG] 2.4: every Outlook item has this stream at its top
_OUTLOOK_PROPERTIES = "__properties_version1.0".encode("utf-16-le")
_TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"  # [MS-OXTNEF] 2.1.3.1: TNEF_SIGNATURE 0x223E9F78, little-endian
_BY_EXTENSION: dict[str, DocumentKind] = {
    "docx": "docx",
    "docm": "docx",
    "dotx": "docx",
    "doc": "doc",
    "dot": "doc",
    "wps": "wps",
    "rtf": "rtf",
    "odt": "odt",
    "pdf": "pdf",
    "zip": "zip",
    "rar": "rar",
    "7z": "7z",
    "txt": "text",
    "htm": "html",
    "html": "html",
    "eml": "message",
    "jpg": "image",
    "jpeg": "image",
    "png": "image",
    "gif": "image",
    "bmp": "image",
    "tif": "image",
    "tiff": "image",
    "webp": "image",
    "heic": "image",
}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
# Kinds that may hold an application form.
DOCUMENT_KINDS: frozenset[DocumentKind] = frozenset(
    {"docx", "doc", "wps", "rtf", "odt", "pdf", "zip", "rar", "7z", "tnef", "msg"}
)


def extension_of(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].casefold() if "." in filename else ""


def kind_by_name(filename: str) -> DocumentKind | None:
    return _BY_EXTENSION.get(extension_of(filename))


def sniff(data: bytes, filename: str = "", declared_type: str = "") -> DocumentKind:
    head = data[:2048]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_kind(data, filename)
    if head.startswith(_OLE):
        return _ole_kind(data, filename)
    if head.lstrip().startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(_TNEF_SIGNATURE):
        return "tnef"
    if (
        head.startswith(_IMAGE_MAGIC)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head[4:12] in (b"ftypheic", b"ftypmif1")
    ):
        return "image"
    declared = declared_type.casefold()
    if declared == "message/rfc822":
        return "message"
    if declared == "text/html" or head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    if declared.startswith("text/"):
        return "text"
    by_name = kind_by_name(filename)
    # Unrecognised content under a document's name (an empty or cut-off file): read it as that kind
    # so that it is reported as broken rather than ignored.
    return by_name if by_name in DOCUMENT_KINDS else "other"


def _zip_kind(data: bytes, filename: str) -> DocumentKind:
    names = _zip_names(data)
    if any(name.startswith("word/") for name in names):
        return "docx"
    if "[Content_Types].xml" in names:  # another Office package (.xlsx, .pptx) unless named a Word file
        return "docx" if kind_by_name(filename) == "docx" else "other"
    if "mimetype" in names and b"application/vnd.oasis.opendocument.text" in data[:200]:
        return "odt"
    if not names:  # no readable directory: a truncated package; its name says what it was meant to be
        by_name = kind_by_name(filename)
        return by_name if by_name in ("docx", "odt") else "zip"
    return "zip"


def _zip_names(data: bytes) -> set[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return set(archive.namelist()[:10_000])
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        pass
    # A cut-off package still starts with local headers; read the first few names from them.
    names: set[str] = set()
    offset = 0
    while len(names) < 20 and data[offset : offset + 4] == b"PK\x03\x04" and offset + 30 <= len(data):
        compressed, _, name_length, extra_length = struct.unpack("<IIHH", data[offset + 18 : offset + 30])
        name = data[offset + 30 : offset + 30 + name_length].decode("utf-8", "replace")
        names.add(name)
        offset += 30 + name_length + extra_length + compressed
    return names


def _ole_kind(data: bytes, filename: str) -> DocumentKind:
    """A Compound File: an encrypted OOXML package, a Word 97-2003 or a WPS document."""
    if _ENCRYPTION_INFO in data:
        by_name = kind_by_name(filename)
        return by_name if by_name in ("docx", "doc", "wps") else "docx"
    if kind_by_name(filename) == "wps":
        return "wps"
    if _OUTLOOK_PROPERTIES in data:  # before WordDocument, which a .doc attached to the item holds
        return "msg"
    if _WORD_STREAM in data:
        return "doc"
    by_name = kind_by_name(filename)
    return by_name if by_name in ("doc", "wps") else "other"


def is_encrypted_ole(data: bytes) -> bool:
    return data.startswith(_OLE) and _ENCRYPTION_INFO in data
