"""Value normalisation per field kind, as the corpus rules state them."""

from __future__ import annotations

import pytest

from parsers.spec import FormSpec
from parsers.textnorm import clean_value, join_wrapped_lines, label_key, safe_filename
from parsers.values import normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  大模型\n驱动的 机器人 ", "大模型驱动的机器人"),
        ("基于大模型的 Text-to-SQL\t与  数据分析", "基于大模型的 Text-to-SQL 与数据分析"),
        ("复旦\u3000大学", "复旦大学"),
        ("Fudan   University\n", "Fudan University"),
    ],
)
def test_whitespace_rules(raw: str, expected: str) -> None:
    assert clean_value(raw) == expected


def test_wrapped_pdf_lines_join_without_space_next_to_cjk() -> None:
    assert join_wrapped_lines("ANT-09 高效微调与持续学\n习") == "ANT-09 高效微调与持续学习"
    assert join_wrapped_lines("Budget\n(10k CNY)") == "Budget (10k CNY)"


def test_label_key_ignores_hints_marks_colons_and_width() -> None:
    assert label_key("*项目名称（必填）：") == label_key("项目名称")
    assert label_key("申请经费（万元）") == label_key("申请经费(万元)")
    assert label_key("项目名称\nProject Title") == label_key("项目名称 Project Title")


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("name", "张 伟", "张伟"),
        ("name", "Wei Zhang", "Wei Zhang"),
        ("email", " Song.YongGang＠SZU.edu.cn ", "song.yonggang@szu.edu.cn"),
        ("email", "", None),
        ("phone", "138-1234-5678", "13812345678"),
        ("phone", "182 4412 1704", "18244121704"),
        ("phone", "010-62781234", "01062781234"),
        ("phone", "１３８１２３４５６７８", "13812345678"),
        ("gender", "Female", "女"),
        ("gender", "male", "男"),
        ("gender", "男", "男"),
        ("gender", "☐男 ☑女", "女"),
        ("money", "20万元", 20),
        ("money", "16.5", 16.5),
        ("money", "200000元", 20),
        ("money", "", None),
        ("yesno", "是（第一期项目已结项）", True),
        ("yesno", "否", False),
        ("yesno", "无", False),
        ("yesno", "是☐ 否☑", False),
        ("yesno", "", None),
        ("text", "", None),
    ],
)
def test_kinds(smp_spec: FormSpec, kind: str, raw: str, expected: object) -> None:
    assert normalise(kind, raw, smp_spec)[0] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3.2", "3.2"),
        ("3.2 自动评测与作文批改", "3.2"),
        ("课题3.2：自动评测与作文批改", "3.2"),
        ("自动评测与作文批改", "3.2"),
        ("视觉-语言-动作模型", "8.2"),
        ("Topic 6.2", "6.2"),
    ],
)
def test_smp_topics(smp_spec: FormSpec, raw: str, expected: str) -> None:
    assert normalise("topic", raw, smp_spec)[0] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ANT07", "ANT-07"), ("ANT-17、幻觉检测与缓解", "ANT-17"), ("ant 3", "ANT-03"), ("复杂推理与规划", "ANT-08")],
)
def test_caai_topics(caai_spec: FormSpec, raw: str, expected: str) -> None:
    assert normalise("topic", raw, caai_spec)[0] == expected


def test_unknown_topic_is_kept_with_low_confidence(smp_spec: FormSpec) -> None:
    value, confidence = normalise("topic", "量子计算", smp_spec)
    assert value == "量子计算"
    assert confidence < 0.5


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd", "x") == "_.._etc_passwd"
    assert safe_filename("a\x00b\x1b[31mc.docx", "x") == "ab[31mc.docx"
    assert safe_filename("", "part-2.pdf") == "part-2.pdf"
    assert safe_filename("e\u0301.pdf", "x") == "\u00e9.pdf"
