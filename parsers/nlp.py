"""What labels cannot settle: a contact or a name written in a form that has no label for it.

Only fields whose label is absent from the document are guessed (a labelled blank stays blank),
with low confidence, from the text outside filling-in notes: emails and phones by their shape,
a person by a surname pattern on a signature line, an institution by its suffix on a line that
speaks of the applicant's unit. The spaCy pipeline (zh_core_web_sm when installed, otherwise a
blank Chinese pipeline segmenting with jieba) is built once per process, on first need.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Any

from parsers.layout import Block, Grid
from parsers.model import FieldValue, Location
from parsers.spec import FieldKind, FormSpec
from parsers.values import normalise

log = logging.getLogger(__name__)

_GUESSABLE: tuple[FieldKind, ...] = ("email", "phone", "name", "institution")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+\s*[@＠]\s*[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<!\d)(?:1[3-9]\d[\s\-]?\d{4}[\s\-]?\d{4}|0\d{2,3}[\s\-]?\d{7,8})(?!\d)")
_SIGNATURE = re.compile(r"签字|签名|签章|负责人|申请人|signature", re.IGNORECASE)
_UNIT = re.compile(r"单位|院校|机构|institution|affiliation", re.IGNORECASE)
# what joins a context word to its value: 单位名称为 …, 单位是 …, 单位在 …, 单位：…
_LINKING = re.compile(r"^\s*(?:名称|全称)?\s*(?:为|是|在|系|[:：])?\s*")
_NOTES = re.compile(r"^\s*(?:填表说明|填写说明|说明|注意事项|instructions?|notes?)", re.IGNORECASE)
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
# a name with one of the compound surnames still in common use (欧阳娜娜, 司马光), right after the
# signature's words: jieba cuts some of them apart (宇文明 as 宇 | 文明), so the pipeline cannot find them
_COMPOUND_SURNAME_NAME = re.compile(
    r"(?:欧阳|司马|诸葛|上官|东方|皇甫|慕容|司徒|令狐|夏侯|尉迟|公孙|长孙|宇文|端木|西门|南宫|澹台|呼延|独孤)"
    r"\s?[\u4e00-\u9fff]{1,2}(?![\u4e00-\u9fff])"
)
_ORG_SUFFIX = "大学|学院|研究所|研究院|实验室|科学院|医院|公司|中心|学校"


@cache
def pipeline() -> Any:
    """The spaCy pipeline with an entity ruler for Chinese person names and institutions."""
    import spacy

    try:
        nlp = spacy.load("zh_core_web_sm")
    except OSError:
        nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    ruler: Any = nlp.add_pipe("entity_ruler", before="ner" if "ner" in nlp.pipe_names else None)
    chinese = {"TEXT": {"REGEX": r"^[\u4e00-\u9fff]+$"}}
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": [{"TEXT": {"REGEX": rf"^[{_SURNAMES}][\u4e00-\u9fff]{{1,2}}$"}}]},
            {
                "label": "PERSON",
                "pattern": [{"TEXT": {"REGEX": rf"^[{_SURNAMES}]$"}}, {"TEXT": {"REGEX": r"^[\u4e00-\u9fff]{1,2}$"}}],
            },
            {"label": "ORG", "pattern": [{"TEXT": {"REGEX": rf"^[\u4e00-\u9fff]{{2,}}(?:{_ORG_SUFFIX})$"}}]},
            {"label": "ORG", "pattern": [chinese, {"TEXT": {"REGEX": rf"^(?:{_ORG_SUFFIX})$"}}]},
            {"label": "ORG", "pattern": [chinese, chinese, {"TEXT": {"REGEX": rf"(?:{_ORG_SUFFIX})$"}}]},
        ]
    )
    return nlp


def guess_unlabelled(blocks: list[Block], spec: FormSpec, missing_labels: list[str]) -> dict[str, FieldValue]:
    wanted = [spec.field(name) for name in missing_labels if spec.field(name).kind in _GUESSABLE]
    if not wanted:
        return {}
    lines = list(_lines_outside_notes(blocks))
    guesses: dict[str, FieldValue] = {}
    for field in wanted:
        found = _guess(field.kind, lines)
        if found is None:
            continue
        raw, where = found
        value, certainty = normalise(field.kind, raw, spec)
        if value is not None:
            guesses[field.name] = FieldValue(value, raw, round(0.5 * certainty, 3), where)
    return guesses


def _lines_outside_notes(blocks: list[Block]) -> list[tuple[str, Location]]:
    lines: list[tuple[str, Location]] = []
    in_notes = False
    for block in blocks:
        if isinstance(block, Grid):
            in_notes = False
            lines.extend((cell.text, block.where) for row in block.rows for cell in row if not cell.continued)
            continue
        in_notes = in_notes or bool(_NOTES.match(block.text))
        if not in_notes:
            lines.append((block.text, block.where))
    return lines


def _guess(kind: FieldKind, lines: list[tuple[str, Location]]) -> tuple[str, Location] | None:
    if kind in ("email", "phone"):
        shape = _EMAIL if kind == "email" else _PHONE
        for text, where in lines:
            match = shape.search(text)
            if match:
                return match.group(0), where
        return None
    label, context = ("PERSON", _SIGNATURE) if kind == "name" else ("ORG", _UNIT)
    for text, where in lines:
        if not context.search(text):
            continue
        after = _after_context(text, context)
        compound = _COMPOUND_SURNAME_NAME.match(after) if kind == "name" else None
        if compound is not None:
            return compound.group(0), where
        # what follows the context words first ("工作单位为清华大学"), then the whole line
        # ("清华大学是我的工作单位"); never an entity that takes the context words in with it
        for candidate in dict.fromkeys((after, text)):
            doc = pipeline()(candidate[:2000])
            for entity in doc.ents:
                span = doc.char_span(entity.start_char, entity.end_char)
                if entity.label_ == label and span is not None and not context.search(span.text):
                    return span.text, where
    return None


def _after_context(text: str, context: re.Pattern[str]) -> str:
    """The line after its last context word and the words linking it to a value (名称为, 是, 在, ：)."""
    ends = [found.end() for found in context.finditer(text)]
    return _LINKING.sub("", text[ends[-1] :]) if ends else text
