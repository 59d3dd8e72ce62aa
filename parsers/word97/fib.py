"""[MS-DOC] 2.5.1 Fib, the File Information Block at the start of the WordDocument stream.

FibBase (wIdent, nFib, fEncrypted, fWhichTblStm, fObfuscated) says whether this is a Word 97 or
later document and whether it is password-protected; FibRgLw97 (ccpText, ccpFtn, ccpHdd, ccpAtn,
ccpEdn, ccpTxbx) how many characters each part of the text has; FibRgFcLcb97 (fcClx/lcbClx,
fcPlcfBtePapx, fcPlcfBteChpx) where the structures are in the 0Table or 1Table stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from parsers.errors import CannotRead
from parsers.model import Unreadable
from parsers.word97.compound_file import Broken

_WORD_IDENT = 0xA5EC  # FibBase.wIdent
_OLDER_WORD_IDENTS = frozenset({0xA5DC, 0xA699})  # Word 6/95 and Word 2 files, whose FIB differs
_WORD97_NFIB = 0x00C0  # FibBase.nFib of Word 97 and later; Word 6/95 (101..105) store a different Fib
_FIB_ENCRYPTED = 0x0100  # FibBase.fEncrypted
FIB_WHICH_TABLE = 0x0200  # FibBase.fWhichTblStm: 1Table (set) or 0Table
_FIB_OBFUSCATED = 0x8000  # FibBase.fObfuscated: with fEncrypted, XOR obfuscation (also a password)
# Indices of fc/lcb pairs in FibRgFcLcb97.
PLCF_BTE_CHPX = 12
PLCF_BTE_PAPX = 13
CLX = 33
FIB_BYTES = 154  # FibBase and the counts up to FibRgFcLcb97: less is a cut-off FIB


def check_fib_base(fib: bytes, filename: str) -> None:
    """[MS-DOC] 2.5.2 FibBase: the identification and the password flags."""
    ident, nfib = struct.unpack_from("<HH", fib, 0)
    (flags,) = struct.unpack_from("<H", fib, 10)
    if ident in _OLDER_WORD_IDENTS or (ident == _WORD_IDENT and nfib < _WORD97_NFIB):
        from parsers.convert import INSTALL_HINT

        detail = f"a Word 6/95 or older document (wIdent {ident:#06x}, nFib {nfib}): {INSTALL_HINT}"
        raise CannotRead(Unreadable("unsupported-format", filename, detail))
    if ident != _WORD_IDENT:
        raise Broken(f"the WordDocument stream does not start with a Word FIB (wIdent {ident:#06x})")
    if flags & _FIB_ENCRYPTED:  # fObfuscated only says how (XOR or RC4), and means nothing without it
        how = "XOR-obfuscated" if flags & _FIB_OBFUSCATED else "encrypted"
        raise CannotRead(Unreadable("encrypted", filename, f"the Word document is password-protected ({how})"))


@dataclass(frozen=True)
class Fib:
    """What the rest of the FIB says: the text's parts and where FibRgFcLcb97's pairs are."""

    ccp_text: int  # the main document: character positions [0, ccp_text)
    ccp_txbx: int  # the text boxes' characters
    text_box_start: int  # after the main text, footnotes, headers, comments and endnotes
    fc_lcb_start: int
    fc_lcb_count: int

    @classmethod
    def read(cls, fib: bytes) -> Fib:
        """Find FibRgLw97 and FibRgFcLcb97 by the counts that precede them (csw, cslw, cbRgFcLcb)."""
        offset = 32
        (csw,) = struct.unpack_from("<H", fib, offset)
        offset += 2 + 2 * csw
        (cslw,) = struct.unpack_from("<H", fib, offset)
        lw_start = offset + 2
        if cslw < 11:
            raise Broken(f"FibRgLw holds {cslw} values, fewer than Word 97's")
        lw = struct.unpack_from("<11i", fib, lw_start)
        # FibRgLw97: cbMac, reserved1, reserved2, ccpText, ccpFtn, ccpHdd, reserved3, ccpAtn, ccpEdn, ccpTxbx, ...
        ccp_text, ccp_ftn, ccp_hdd, _, ccp_atn, ccp_edn, ccp_txbx = lw[3:10]
        if min(ccp_text, ccp_ftn, ccp_hdd, ccp_atn, ccp_edn, ccp_txbx) < 0:
            raise Broken("negative character counts in the FIB")
        offset = lw_start + 4 * cslw
        (count,) = struct.unpack_from("<H", fib, offset)
        if count <= CLX:
            raise Broken(f"FibRgFcLcb holds {count} pairs, fewer than Word 97's")
        text_box_start = ccp_text + ccp_ftn + ccp_hdd + ccp_atn + ccp_edn
        return cls(ccp_text, ccp_txbx, text_box_start, offset + 2, count)

    def table_slice(self, stream: bytes, table: bytes, index: int) -> bytes:
        """The bytes of the table stream FibRgFcLcb97's pair ``index`` points to."""
        fc, lcb = struct.unpack_from("<II", stream, self.fc_lcb_start + 8 * index)
        if lcb == 0:
            return b""
        if fc + lcb > len(table):
            raise Broken(f"FibRgFcLcb97 entry {index} points past the table stream")
        return table[fc : fc + lcb]
