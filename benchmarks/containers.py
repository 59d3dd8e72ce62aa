"""Archives and wrappers written by hand after their specifications, around any files.

RAR 4.x stored archives (RARLAB's technote.txt, "RAR version 4.x - File header"), TNEF
([MS-OXTNEF] 2.1.3 "TNEF Stream" and 2.1.3.3 attributes), a zip whose central directory flags
UTF-8 over GBK names (APPNOTE 4.3.12); .7z through py7zr. :mod:`benchmarks.shapes` wraps forms
in them.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

# ---------------------------------------------------------------------------------------------- archives


def seven_zip(files: dict[str, bytes]) -> bytes:
    import py7zr

    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(data, name)
    return buffer.getvalue()


def _rar4_block(head_type: int, flags: int, fields: bytes, data: bytes = b"") -> bytes:
    """A RAR 4.x block: HEAD_CRC (low 16 bits of the CRC32 of the rest of the header), HEAD_TYPE,
    HEAD_FLAGS, HEAD_SIZE, the type's fields; then, for a file, its data."""
    head = struct.pack("<BHH", head_type, flags, 7 + len(fields)) + fields
    return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head + data


def rar4_stored(files: dict[str, bytes], oem_code_page: str | None = None) -> bytes:
    """A RAR 4.x archive whose files are stored (METHOD 0x30): no rar binary needed to make one.

    Marker block, archive header (0x73), one file header (0x74) per file with LHD_LONG_BLOCK (0x8000,
    PACK_SIZE follows) and LHD_UNICODE (0x0200) over a UTF-8 name without the zero byte that would
    start the technote's compressed Unicode form, then the end-of-archive block (0x7B). With
    ``oem_code_page`` the names are in that code page without LHD_UNICODE, as WinRAR before 3.0 and
    Chinese-Windows archivers write them.
    """
    archive = b"Rar!\x1a\x07\x00" + _rar4_block(0x73, 0, struct.pack("<HI", 0, 0))
    for name, data in files.items():
        encoded = name.encode(oem_code_page or "utf-8")
        fields = struct.pack(
            "<IIBIIBBHI",
            len(data),  # PACK_SIZE
            len(data),  # UNP_SIZE
            2,  # HOST_OS: Win32
            zlib.crc32(data),  # FILE_CRC
            0x5921_0000,  # FTIME: 2024-09-01 in MS-DOS format
            20,  # UNP_VER 2.0
            0x30,  # METHOD: store
            len(encoded),  # NAME_SIZE
            0x20,  # ATTR: archive
        )
        flags = 0x8000 if oem_code_page else 0x8000 | 0x0200
        archive += _rar4_block(0x74, flags, fields + encoded, data)
    return archive + _rar4_block(0x7B, 0x4000, b"")


def zip_flagged_utf8_over_gbk(files: dict[str, bytes]) -> bytes:
    """A zip whose names are GBK bytes under the UTF-8 flag, as some Chinese archivers write them.

    zipfile clears the flag of names it writes, so the flag (APPNOTE 4.4.4, bit 11) is set afterwards
    in every local file header (4.3.7) and central directory header (4.3.12).
    """
    placeholders = {name: f"{number:0{len(name.encode('gbk'))}d}" for number, name in enumerate(files)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(placeholders[name], data)
    raw = bytearray(buffer.getvalue())
    for name, placeholder in placeholders.items():
        raw = raw.replace(placeholder.encode(), name.encode("gbk"))
    offset = 0
    while raw[offset : offset + 4] == b"PK\x03\x04":
        raw[offset + 7] |= 0x08  # bit 11 is bit 3 of the flags' high byte
        compressed, _, name_length, extra_length = struct.unpack("<IIHH", raw[offset + 18 : offset + 30])
        offset += 30 + name_length + extra_length + compressed
    while raw[offset : offset + 4] == b"PK\x01\x02":
        raw[offset + 9] |= 0x08  # the central header's flags are two bytes later
        name_length, extra_length, comment_length = struct.unpack("<HHH", raw[offset + 28 : offset + 34])
        offset += 46 + name_length + extra_length + comment_length
    return bytes(raw)


# ---------------------------------------------------------------------------------------------- TNEF

# [MS-OXTNEF] 2.1.3.3: attribute IDs, the low word the attribute, the high word its type
_ATT_TNEF_VERSION = 0x0008_9006  # atpDword
_ATT_OEM_CODEPAGE = 0x0006_9007  # atpByte
_ATT_MESSAGE_CLASS = 0x0007_8008  # atpWord
_ATT_ATTACH_REND_DATA = 0x0006_9002  # atpByte
_ATT_ATTACH_TITLE = 0x0001_8010  # atpString
_ATT_ATTACH_DATA = 0x0006_800F  # atpByte
_LEVEL_MESSAGE, _LEVEL_ATTACHMENT = 0x01, 0x02


def _tnef_attribute(level: int, attribute: int, data: bytes) -> bytes:
    """AttrLevel, AttrID, AttrLength, AttrData, Checksum (the sum of AttrData's bytes modulo 65536)."""
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def tnef(files: dict[str, bytes], codepage: int = 936) -> bytes:
    """A winmail.dat as Outlook writes it for "Rich Text" mail: each attachment announced by
    attAttachRendData, titled by attAttachTitle in the OEM code page, its bytes in attAttachData."""
    stream = struct.pack("<IH", 0x223E9F78, 0x0001)  # TNEFSignature, LegacyKey
    stream += _tnef_attribute(_LEVEL_MESSAGE, _ATT_TNEF_VERSION, struct.pack("<I", 0x00010000))
    stream += _tnef_attribute(_LEVEL_MESSAGE, _ATT_OEM_CODEPAGE, struct.pack("<II", codepage, 0))
    stream += _tnef_attribute(_LEVEL_MESSAGE, _ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\x00")
    for name, data in files.items():
        # AttachType 1 (file), AttachPosition, RenderWidth, RenderHeight, DataFlags
        rendering = struct.pack("<HIHHI", 0x0001, 0xFFFFFFFF, 32, 32, 0)
        stream += _tnef_attribute(_LEVEL_ATTACHMENT, _ATT_ATTACH_REND_DATA, rendering)
        stream += _tnef_attribute(_LEVEL_ATTACHMENT, _ATT_ATTACH_TITLE, name.encode(f"cp{codepage}") + b"\x00")
        stream += _tnef_attribute(_LEVEL_ATTACHMENT, _ATT_ATTACH_DATA, data)
    return stream
