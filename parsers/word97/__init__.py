"""Word 97-2003 (.doc) and WPS Office (.wps) documents to lines and grids, without LibreOffice.

Both are Compound Files ([MS-CFB], opened with olefile) holding a ``WordDocument`` stream in the
binary format of [MS-DOC]. The text is found through the File Information Block and the piece
table; the table structure through the paragraph properties of each paragraph mark. The result is
the same model the .docx reader gives (parsers.layout), so label/value pairing is written once.

What is read, in [MS-DOC]'s terms:

- 2.5.1 Fib: FibBase (wIdent, nFib, fEncrypted, fWhichTblStm, fObfuscated), FibRgLw97 (ccpText,
  ccpFtn, ccpHdd, ccpAtn, ccpEdn, ccpTxbx) and FibRgFcLcb97 (fcClx/lcbClx, fcPlcfBtePapx,
  fcPlcfBteChpx), which point into the 0Table or 1Table stream.
- 2.9.38 Clx, 2.9.178 Pcdt, 2.8.35 PlcPcd, 2.9.177 Pcd, 2.9.73 FcCompressed: the piece table, which
  says where each run of characters is stored and whether as 8-bit or UTF-16LE text.
- 2.4.1 "Retrieving Text", 2.4.2 "Determining Paragraph Boundaries": the main document is the
  character positions [0, ccpText); a paragraph ends at 0x0D, at a cell mark 0x07 or a section
  mark 0x0C.
- 2.8.6 PlcBtePapx, 2.9.175 PapxFkp, 2.9.174 PapxInFkp, 2.9.23 BxPap: the paragraph properties
  (sprms) of each paragraph mark; 2.8.5 PlcBteChpx, 2.9.33 ChpxFkp, 2.9.32 Chpx for characters.
- 2.4.3 "Overview of Tables", 2.4.4 "Determining Cell Boundaries": a paragraph with sprmPFInTable
  is in a table at depth sprmPItap; at depth 1 a cell ends at 0x07 and a row at the 0x07 of a TTP
  paragraph (sprmPFTtp); deeper, sprmPFInnerTableCell and sprmPFInnerTtp mark them.
- 2.6.4 sprmTDefTable (TDefTableOperand, 2.9.319 TC80, 2.9.311 TCGRF) and sprmTVertMerge: the cell
  edges of each row (merged cells span the columns their edges cover) and vertical merges.
- 2.8.25 "Fields": 0x13 begins a field, 0x14 separates its instruction from its result, 0x15 ends
  it; only the result is text a reader sees. A FORMCHECKBOX field has no result: its state is in
  the FFData (2.9.78) its instruction's 0x01 points to by sprmCPicLocation, shown as ☑ or ☐.
- 2.2.5 Sprm (the operand size from spra) and sprmCFRMarkDel: text deleted with tracked changes
  is left out, as Word shows it once the changes are accepted.

Every count is bounded by the file's own size and by parsers.limits; a structure that points
outside its stream makes the file ``corrupt``, never a partial reading.

One module per part: ``compound_file`` ([MS-CFB]), ``fib`` (2.5.1), ``piece_table`` (2.9.38 Clx),
``fkp`` (2.8.6 PlcBtePapx / 2.8.5 PlcBteChpx and their FKPs), ``sprms`` (2.2.5, 2.6 and the table
properties), ``text`` (2.4.1, 2.4.2, 2.8.25), ``tables`` (2.4.3, 2.4.4), and ``document``, which
puts them together and holds the readers' entry points ``read_doc`` and ``refuse_if_encrypted``.
"""
