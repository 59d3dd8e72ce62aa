"""[MS-DOC] 2.8.6 PlcBtePapx, 2.9.175 PapxFkp, 2.9.174 PapxInFkp, 2.9.23 BxPap; 2.8.5 PlcBteChpx,
2.9.33 ChpxFkp, 2.9.32 Chpx: the paragraph and character properties of runs of the text.

A PlcBte lists the formatted disk pages (FKPs) of the WordDocument stream; each page gives runs of
bytes of text and the grpprl (the sprms, see :mod:`parsers.word97.sprms`) that applies to them.
"""

from __future__ import annotations

import struct

from parsers.errors import CannotRead
from parsers.model import Unreadable
from parsers.word97.compound_file import Broken
from parsers.word97.sprms import SPRM_P_HUGE_PAPX, sprms

_PAGE = 512  # an FKP is one 512-byte page of the WordDocument stream
_MAX_FKP_PAGES = 8192  # 4 MiB of formatting pages: far beyond a form (a 300-page book needs about 600)

Run = tuple[int, int, bytes]  # first byte, end byte, grpprl


def read_fkp_runs(plc: bytes, stream: bytes, data: bytes, filename: str, *, paragraphs: bool) -> list[Run]:
    """(first byte, end byte, grpprl) for every run of the FKPs a PlcBte points to, sorted."""
    if len(plc) < 4:
        return []
    if (len(plc) - 4) % 8:
        raise Broken("a PlcBte of the wrong size")
    count = (len(plc) - 4) // 8
    pages = struct.unpack_from(f"<{count}I", plc, 4 * (count + 1))
    distinct = dict.fromkeys(page & 0x3FFFFF for page in pages)  # PnFkpPapx/PnFkpChpx: 22 bits
    if len(distinct) > _MAX_FKP_PAGES:
        detail = f"{len(distinct)} pages of formatting (limit {_MAX_FKP_PAGES})"
        raise CannotRead(Unreadable("too-large", filename, detail))
    runs: list[Run] = []
    for pn in distinct:
        page_start = pn * _PAGE
        page = stream[page_start : page_start + _PAGE]
        if len(page) != _PAGE:
            raise Broken("an FKP page lies past the end of the WordDocument stream")
        runs.extend(_fkp_page_runs(page, data, paragraphs=paragraphs))
    runs.sort(key=lambda run: run[0])
    return runs


def _fkp_page_runs(page: bytes, data: bytes, *, paragraphs: bool) -> list[Run]:
    """[MS-DOC] 2.9.175 PapxFkp or 2.9.33 ChpxFkp: rgfc, then a BxPap or a Chpx offset per run."""
    crun = page[_PAGE - 1]
    entry = 13 if paragraphs else 1  # BxPap (bOffset + PHE) or the one-byte Chpx offset
    if 4 * (crun + 1) + entry * crun > _PAGE - 1:
        raise Broken(f"an FKP claims {crun} runs")
    bounds = struct.unpack_from(f"<{crun + 1}I", page, 0)
    runs = []
    for number in range(crun):
        word_offset = page[4 * (crun + 1) + entry * number]
        grpprl = b""
        if word_offset:
            at = 2 * word_offset
            grpprl = _papx_in_fkp(page, at, data) if paragraphs else page[at + 1 : at + 1 + page[at]]
        runs.append((bounds[number], bounds[number + 1], grpprl))
    return runs


def _papx_in_fkp(page: bytes, at: int, data: bytes) -> bytes:
    """[MS-DOC] 2.9.174 PapxInFkp: the grpprl after the istd, or the one sprmPHugePapx points to."""
    size = page[at]
    start = at + 1
    if size == 0:
        size, start = page[at + 1], at + 2
        length = 2 * size
    else:
        length = 2 * size - 1
    grpprl_and_istd = page[start : start + length]
    grpprl = grpprl_and_istd[2:]
    for sprm, operand in sprms(grpprl):
        if sprm == SPRM_P_HUGE_PAPX and len(operand) == 4:
            # [MS-DOC] 2.9.181 PrcData in the Data stream: cbGrpprl then the real grpprl
            (position,) = struct.unpack("<I", operand)
            if position + 2 > len(data):
                raise Broken("sprmPHugePapx points past the Data stream")
            (huge_size,) = struct.unpack_from("<H", data, position)
            return bytes(data[position + 2 : position + 2 + huge_size])
    return bytes(grpprl)
