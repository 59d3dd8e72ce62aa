"""Word (.docx) to lines and grids, in reading order.

Only the main document part is parsed (by python-docx's XML parser), after the package's sizes
and every part's checksum are checked; the body's XML is then walked by hand because forms hide their
text where the object API does not look: content controls (w:sdt, block and inline), text boxes
(w:txbxContent, read once although Word stores a fallback copy), legacy form fields, merged and
nested table cells, and the headers (ECMA-376 Part 1, 17.10: some forms put a field there).
A raw count of every w:t guards the walk: when the walk saw clearly less text than the document
holds, the missing paragraphs are added as lines and a diagnostic says so.

What Word shows is what is read. A content control showing its placeholder (17.5.2.39
showingPlcHdr) holds Word's prompt ("单击或点击此处输入文字。"), not a value, and is read as blank.
Tracked changes read as if accepted (17.13.5 Revisions): inserted and moved-to text is kept, deleted
and moved-from text (w:del, w:delText, w:moveFrom), deleted table rows (w:trPr/w:del) and deleted
cells (w:tcPr/w:cellDel) are dropped.
"""

from __future__ import annotations

import io
import logging
import posixpath
import zipfile
import zlib
from dataclasses import dataclass, field

from lxml import etree  # type: ignore[import-untyped]

from parsers.errors import CannotRead
from parsers.layout import Block, Cell, Grid, Line
from parsers.limits import Limits
from parsers.model import Location, Unreadable

log = logging.getLogger(__name__)

TRANSITIONAL = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
STRICT = "http://purl.oclc.org/ooxml/wordprocessingml/main"
MARKUP_COMPATIBILITY = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_CHECKED, _UNCHECKED = "☑", "☐"
_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_PACKAGE_RELATIONSHIPS = "_rels/.rels"
_CONTENT_TYPES = "[Content_Types].xml"
_CHUNK = 1 << 20


@dataclass
class DocxText:
    blocks: list[Block]
    diagnostics: list[str] = field(default_factory=list)


def read_docx(data: bytes, filename: str, limits: Limits) -> DocxText:
    """The document's blocks; raises CannotRead with the reason it cannot be read."""
    body, headers = _open_body(data, filename, limits)
    walker = _Walker(filename, body.nsmap.get("w") or _namespace_of(body))
    for header in headers:
        walker.walk_children(header)
    walker.walked_chars = 0  # the check below compares the body's text with the body's walk
    walker.walk_children(body)
    diagnostics = walker.recover_skipped(body)
    return DocxText(walker.blocks, diagnostics)


def load_word_library() -> None:
    """Import python-docx now (it is imported where it is used, so the bot's own process never pays for it)."""
    import docx.opc.constants
    import docx.oxml.parser  # noqa: F401


def _open_body(data: bytes, filename: str, limits: Limits) -> tuple[etree._Element, list[etree._Element]]:
    """The main part's w:body and the header parts' roots, parsed by python-docx's own (entity-safe) parser.

    Only these parts are parsed: ``docx.Document`` would also parse styles, numbering, settings and
    the rest, which was most of the cost of reading a form and none of its text.
    """
    from docx.opc.constants import CONTENT_TYPE
    from docx.oxml.parser import parse_xml

    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"not a complete zip package: {exc}")) from None
    try:
        with package:
            _check_package(package.infolist(), filename, limits)
            _check_parts(package)
            part = _main_part(package)
            if part is None:
                raise CannotRead(Unreadable("corrupt", filename, "no main document part in the package"))
            declared = _declared_type(package, part)
            if declared != CONTENT_TYPE.WML_DOCUMENT_MAIN:
                # macro-enabled documents and templates hold their text the same way
                log.info(
                    "%s: the main part %s is declared as '%s', not a Word document; reading it",
                    filename,
                    part,
                    declared,
                )
            root = parse_xml(package.read(part))
            headers = [parse_xml(package.read(name)) for name in _header_parts(package, part)]
    except CannotRead:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError, NotImplementedError) as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken Word package: {exc}")) from None
    except etree.XMLSyntaxError as exc:
        raise CannotRead(Unreadable("corrupt", filename, f"broken XML in the document: {exc}")) from None
    body = root.find(f"{{{_namespace_of(root)}}}body")
    if body is None:
        raise CannotRead(Unreadable("corrupt", filename, "the document has no body"))
    return body, headers


def _header_parts(package: zipfile.ZipFile, main_part: str) -> list[str]:
    """The header parts the main part's relationships name, in their order, each once."""
    folder, base = posixpath.split(main_part)
    relationships_name = posixpath.join(folder, "_rels", f"{base}.rels")
    names = set(package.namelist())
    if relationships_name not in names:
        return []
    found: list[str] = []
    for relationship in etree.fromstring(package.read(relationships_name), _SAFE_XML):
        if relationship.get("TargetMode") == "External" or not relationship.get("Type", "").endswith("/header"):
            continue
        target = posixpath.normpath(posixpath.join("/", folder, relationship.get("Target", ""))).lstrip("/")
        if target in names and target not in found:
            found.append(target)
    return found


def _check_package(members: list[zipfile.ZipInfo], filename: str, limits: Limits) -> None:
    total = sum(member.file_size for member in members)
    markup = sum(member.file_size for member in members if member.filename.endswith((".xml", ".rels")))
    if len(members) > 5_000 or markup > limits.docx_max_xml_bytes or total > limits.archive_max_total_bytes:
        detail = f"{len(members)} parts, {markup} bytes of XML, {total} bytes in all uncompressed"
        raise CannotRead(Unreadable("too-large", filename, detail))
    for member in members:
        if member.file_size > 1_000_000 and member.file_size > limits.archive_max_ratio * max(member.compress_size, 1):
            raise CannotRead(
                Unreadable("archive-refused", filename, f"part {member.filename!r} expands {member.file_size} bytes")
            )
        if member.flag_bits & 0x1:
            raise CannotRead(Unreadable("encrypted", filename, f"part {member.filename!r} is encrypted"))


def _check_parts(package: zipfile.ZipFile) -> None:
    """Read every part through to its CRC: a damaged part means a damaged file, even one not parsed."""
    for member in package.infolist():
        with package.open(member) as part:
            while part.read(_CHUNK):
                pass


def _main_part(package: zipfile.ZipFile) -> str | None:
    """The part the package relationships name as the document; else the usual or a likely name."""
    names = set(package.namelist())
    if _PACKAGE_RELATIONSHIPS in names:
        relationships = etree.fromstring(package.read(_PACKAGE_RELATIONSHIPS), _SAFE_XML)
        for relationship in relationships:
            if _local_name(relationship) != "Relationship" or relationship.get("TargetMode") == "External":
                continue
            if not relationship.get("Type", "").endswith("/officeDocument"):
                continue
            target = posixpath.normpath(posixpath.join("/", relationship.get("Target", ""))).lstrip("/")
            if target in names:
                return target
    if "word/document.xml" in names:
        return "word/document.xml"
    candidates = sorted(
        name for name in names if name.startswith("word/") and name.endswith(".xml") and name.count("/") == 1
    )
    for name in candidates:
        if "document" in name:
            return name
    return None


def _declared_type(package: zipfile.ZipFile, part: str) -> str:
    """The content type [Content_Types].xml gives the part, by its name or else its extension."""
    if _CONTENT_TYPES not in package.namelist():
        return ""
    extension = part.rsplit(".", 1)[-1].lower()
    by_extension = ""
    for entry in etree.fromstring(package.read(_CONTENT_TYPES), _SAFE_XML):
        kind = _local_name(entry)
        if kind == "Override" and entry.get("PartName", "").lstrip("/").lower() == part.lower():
            return str(entry.get("ContentType", ""))
        if kind == "Default" and entry.get("Extension", "").lower() == extension:
            by_extension = str(entry.get("ContentType", ""))
    return by_extension


def _local_name(element: etree._Element) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _namespace_of(element: etree._Element) -> str:
    tag = element.tag if isinstance(element.tag, str) else ""
    if tag.startswith("{"):
        namespace = tag[1:].split("}", 1)[0]
        if namespace in (TRANSITIONAL, STRICT):
            return namespace
    return TRANSITIONAL


class _Walker:
    def __init__(self, filename: str, namespace: str) -> None:
        self.filename = filename
        self.w = namespace
        self.blocks: list[Block] = []
        self.tables = 0
        self.paragraphs = 0
        self.walked_chars = 0
        self.visited: set[etree._Element] = set()
        self._skip = {
            self.q(name)
            for name in ("pPr", "rPr", "tblPr", "trPr", "tcPr", "sdtPr", "del", "moveFrom", "instrText", "delText")
        }
        self._containers = {self.q(name) for name in ("customXml", "ins", "moveTo", "smartTag", "hyperlink")}

    def q(self, name: str) -> str:
        return f"{{{self.w}}}{name}"

    def walk_children(self, element: etree._Element) -> None:
        for child in element:
            self.block(child)

    def block(self, element: etree._Element) -> None:
        tag = element.tag
        if tag == self.q("p"):
            self.paragraph(element)
        elif tag == self.q("tbl"):
            self.table(element)
        elif tag == self.q("sdt"):
            if self.shows_placeholder(element):
                self.visited.add(element)  # read, as blank: the recovery below must not add it back
                return
            content = element.find(self.q("sdtContent"))
            if content is not None:
                self.walk_children(content)
        elif tag in self._containers:
            self.walk_children(element)

    def paragraph(self, element: etree._Element) -> None:
        self.visited.add(element)
        self.paragraphs += 1
        parts: list[str] = []
        boxes: list[etree._Element] = []
        self.inline(element, parts, boxes)
        text = "".join(parts)
        if text.strip():
            self.blocks.append(Line(text, Location(self.filename, paragraph=self.paragraphs)))
        for box in boxes:
            self.walk_children(box)

    def inline(self, element: etree._Element, parts: list[str], boxes: list[etree._Element]) -> None:
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or tag in self._skip:
                continue
            if tag == self.q("sdt") and self.shows_placeholder(child):
                continue
            if tag == self.q("t"):
                text = child.text or ""
                self.walked_chars += len(text)
                parts.append(text)
            elif tag == self.q("tab"):
                parts.append("\t")
            elif tag in (self.q("br"), self.q("cr")):
                parts.append("\n")
            elif tag == self.q("noBreakHyphen"):
                parts.append("-")
            elif tag == self.q("checkBox"):
                parts.append(self.checkbox_mark(child))
            elif tag == self.q("txbxContent"):
                boxes.append(child)
            elif tag == f"{{{MARKUP_COMPATIBILITY}}}AlternateContent":
                choice = child.find(f"{{{MARKUP_COMPATIBILITY}}}Choice")
                self.inline(choice if choice is not None else child, parts, boxes)
            elif tag == f"{{{MARKUP_COMPATIBILITY}}}Fallback":
                continue
            else:
                self.inline(child, parts, boxes)

    def shows_placeholder(self, sdt: etree._Element) -> bool:
        """w:sdtPr/w:showingPlcHdr on (an on/off property: absent w:val means on)."""
        properties = sdt.find(self.q("sdtPr"))
        flag = properties.find(self.q("showingPlcHdr")) if properties is not None else None
        return flag is not None and flag.get(self.q("val"), "1") not in ("0", "false", "off")

    def checkbox_mark(self, checkbox: etree._Element) -> str:
        for name in ("checked", "default"):
            state = checkbox.find(self.q(name))
            if state is not None:
                value = state.get(self.q("val"), "1")
                return _CHECKED if value in ("1", "true", "on") else _UNCHECKED
        return _UNCHECKED

    def table(self, element: etree._Element) -> None:
        self.tables += 1
        where = Location(self.filename, table=self.tables)
        nested: list[etree._Element] = []
        rows = tuple(self.row(tr, nested) for tr in self.children_named(element, "tr") if not self.deleted(tr, "trPr"))
        self.blocks.append(Grid(rows, where))
        for table in nested:
            self.table(table)

    def row(self, tr: etree._Element, nested: list[etree._Element]) -> tuple[Cell, ...]:
        column = 0
        properties = tr.find(self.q("trPr"))
        if properties is not None:
            before = properties.find(self.q("gridBefore"))
            column = _int(before.get(self.q("val")) if before is not None else None, 0)
        cells = []
        for tc in self.children_named(tr, "tc"):
            if self.deleted(tc, "tcPr"):
                continue
            span, continued = self.merge_of(tc)
            cells.append(Cell(self.cell_text(tc, nested), column, span, continued))
            column += span
        return tuple(cells)

    def deleted(self, element: etree._Element, properties_name: str) -> bool:
        """A row (w:trPr/w:del) or cell (w:tcPr/w:cellDel) deleted with tracked changes on."""
        properties = element.find(self.q(properties_name))
        return properties is not None and (
            properties.find(self.q("del")) is not None or properties.find(self.q("cellDel")) is not None
        )

    def merge_of(self, tc: etree._Element) -> tuple[int, bool]:
        properties = tc.find(self.q("tcPr"))
        if properties is None:
            return 1, False
        grid_span = properties.find(self.q("gridSpan"))
        span = max(1, min(_int(grid_span.get(self.q("val")) if grid_span is not None else None, 1), 64))
        vertical = properties.find(self.q("vMerge"))
        continued = vertical is not None and vertical.get(self.q("val"), "continue") != "restart"
        return span, continued

    def cell_text(self, tc: etree._Element, nested: list[etree._Element]) -> str:
        """The cell's own paragraphs; a nested table becomes its own grid after this one."""
        outer_blocks = self.blocks
        self.blocks = []
        for child in tc:
            if child.tag == self.q("tbl"):
                nested.append(child)
            else:
                self.block(child)
        inner, self.blocks = self.blocks, outer_blocks
        lines = [block.text for block in inner if isinstance(block, Line)]
        self.blocks.extend(block for block in inner if isinstance(block, Grid))
        return "\n".join(lines)

    def children_named(self, element: etree._Element, name: str) -> list[etree._Element]:
        """Direct children called ``name``, looking through content controls and custom XML."""
        found = []
        for child in element:
            if child.tag == self.q(name):
                found.append(child)
            elif child.tag == self.q("sdt"):
                content = child.find(self.q("sdtContent"))
                if content is not None:
                    found.extend(self.children_named(content, name))
            elif child.tag == self.q("customXml"):
                found.extend(self.children_named(child, name))
        return found

    def recover_skipped(self, body: etree._Element) -> list[str]:
        """Compare with a raw scan of w:t; add paragraphs the walk missed when it missed a lot."""
        namespaces = {"w": self.w, "mc": MARKUP_COMPATIBILITY}
        texts = etree.XPath(
            "//w:t[not(ancestor::mc:Fallback)][not(ancestor::w:del)][not(ancestor::w:moveFrom)]"
            "[not(ancestor::w:sdt[w:sdtPr/w:showingPlcHdr])]",
            namespaces=namespaces,
        )(body)
        raw_chars = sum(len(text.text or "") for text in texts)
        if raw_chars - self.walked_chars <= max(20, raw_chars // 10):
            return []
        recovered = 0
        for paragraph in etree.XPath("//w:p[not(ancestor::mc:Fallback)]", namespaces=namespaces)(body):
            if paragraph in self.visited or any(ancestor in self.visited for ancestor in paragraph.iterancestors()):
                continue
            parts: list[str] = []
            self.inline(paragraph, parts, [])
            text = "".join(parts)
            if text.strip():
                recovered += 1
                self.paragraphs += 1
                self.blocks.append(Line(text, Location(self.filename, paragraph=self.paragraphs)))
        return [
            f"{self.filename}: the structured walk read {self.walked_chars} of {raw_chars} characters; "
            f"{recovered} paragraphs outside the usual structure were added"
        ]


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
