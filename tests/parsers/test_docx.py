"""Word forms in the shapes applicants send them, built with python-docx at test time."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest

from parsers import read_document
from parsers.model import FormReading, Unreadable
from parsers.spec import FormSpec
from tests.parsers.builders import (
    EXPECTED,
    NOTES,
    SMP_ROWS,
    W_NS,
    body_xml_form,
    docx_bytes,
    paragraph_form,
    table_form,
    w_paragraph,
)


def read(data: bytes, spec: FormSpec) -> FormReading:
    reading = read_document(data, "申报表.docx", spec)
    assert isinstance(reading, FormReading), reading
    return reading


def test_canonical_table(smp_spec: FormSpec) -> None:
    reading = read(table_form(SMP_ROWS), smp_spec)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED
    assert reading.missing == ()
    assert reading.kind == "docx"
    title = reading.fields["project_title"]
    assert title.where.table == 1 and title.where.row == 1
    assert title.confidence > 0.9


def test_instructions_and_signature_are_not_values(smp_spec: FormSpec) -> None:
    rows = [row for row in SMP_ROWS if row[0] != "申报课题"]
    rows = [(["手机", "", "电子邮箱", ""] if row[0] == "手机" else row) for row in rows]
    reading = read(table_form(rows), smp_spec)
    assert reading.value("topic") is None  # not "5.1" from the notes
    assert reading.value("email") is None and reading.value("phone") is None
    assert reading.missing == ("topic", "email", "phone")


def test_hints_marks_and_full_width_colons_in_labels(smp_spec: FormSpec) -> None:
    decorated = [[f"*{row[0]}（必填）：", *row[1:]] if len(row) > 1 else row for row in SMP_ROWS]
    decorated[1] = ["申请人姓名：", "张 伟", "性别：", "男"]
    reading = read(table_form(decorated), smp_spec)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED


def test_extra_empty_rows_and_stray_spaces(smp_spec: FormSpec) -> None:
    rows = [["", ""], *SMP_ROWS[:3], ["", "", "", ""], *SMP_ROWS[3:]]
    rows[1] = ["项目名称", "  基于大模型的中文作文\n自动批改研究 "]
    reading = read(table_form(rows), smp_spec)
    assert reading.value("project_title") == EXPECTED["project_title"]


def test_merged_cells_group_column_and_spans(smp_spec: FormSpec) -> None:
    cell = "<w:tc><w:tcPr>{props}</w:tcPr><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:tc>"
    group = '<w:vMerge w:val="restart"/>'
    rows = [
        [
            cell.format(props=group, text="申请人基本信息"),
            cell.format(props="", text="申请人姓名"),
            cell.format(props="", text="李 四"),
            cell.format(props="", text="性别"),
            cell.format(props="", text="女"),
        ],
        [
            cell.format(props="<w:vMerge/>", text=""),
            cell.format(props="", text="所在单位"),
            cell.format(props='<w:gridSpan w:val="3"/>', text="北京大学"),
        ],
        [
            cell.format(props="<w:vMerge/>", text=""),
            cell.format(props="", text="项目名称"),
            cell.format(props='<w:gridSpan w:val="3"/>', text="大模型价值观测量"),
        ],
        [cell.format(props="", text="申报课题"), cell.format(props='<w:gridSpan w:val="4"/>', text="5.3")],
    ]
    table = f"<w:tbl {W_NS}><w:tblGrid>" + "<w:gridCol/>" * 5 + "</w:tblGrid>"
    table += "".join("<w:tr>" + "".join(row) + "</w:tr>" for row in rows) + "</w:tbl>"
    reading = read(body_xml_form([table]), smp_spec)
    assert reading.value("applicant_name") == "李四"
    assert reading.value("gender") == "女"
    assert reading.value("institution") == "北京大学"
    assert reading.value("project_title") == "大模型价值观测量"
    assert reading.value("topic") == "5.3"


def test_value_in_the_cell_below(smp_spec: FormSpec) -> None:
    rows = [
        ["项目名称", "申请人姓名", "所在单位", "申报课题"],
        ["大模型价值观测量", "王五", "南开大学", "5.3"],
        ["电子邮箱", "手机", "性别", "职称"],
        ["wangwu@nankai.edu.cn", "13800001111", "男", "教授"],
    ]
    reading = read(table_form(rows, after=[]), smp_spec)
    assert reading.value("project_title") == "大模型价值观测量"
    assert reading.value("applicant_name") == "王五"
    assert reading.value("email") == "wangwu@nankai.edu.cn"
    assert reading.value("title") == "教授"
    assert reading.fields["institution"].where.row == 2


def test_value_typed_under_the_label_in_one_cell(caai_spec: FormSpec) -> None:
    rows = [
        ["项目名称\nProject Title\n大模型长上下文建模研究"],
        ["项目负责人\n吕婉婷", "依托单位 Institution\n四川大学"],
        ["课题编号 Topic No.：ANT07"],
        ["电话 Phone 130 4027 5979"],
    ]
    reading = read(table_form(rows, after=[]), caai_spec)
    assert reading.value("project_title") == "大模型长上下文建模研究"
    assert reading.value("applicant_name") == "吕婉婷"
    assert reading.value("institution") == "四川大学"
    assert reading.value("topic") == "ANT-07"
    assert reading.value("phone") == "13040275979"


def test_paragraph_form(smp_spec: FormSpec) -> None:
    lines = [
        "申 报 表",
        "项目名称：基于大模型的中文作文自动批改研究",
        "申请人姓名：张 伟\u3000\u3000性别：男",
        "出生年月：1985.03\u3000\u3000职称：副教授",
        "最高学位：博士\u3000\u3000院系：计算机学院",
        "所在单位：清华大学",
        "手机：138-1234-5678\u3000\u3000电子邮箱：ZhangWei＠Tsinghua.edu.cn",
        "申报课题：课题3.2：自动评测与作文批改",
        "申请经费（万元）：20万元",
        "是否获第一期资助：否",
        "一、研究内容",
        "本项目研究作文批改。",
        "申请人（签字）：\u3000\u3000\u3000\u3000 日期：\u3000\u3000年\u3000\u3000月",
        *NOTES,
    ]
    reading = read(paragraph_form(lines), smp_spec)
    assert {name: reading.value(name) for name in EXPECTED} == EXPECTED
    assert reading.fields["applicant_name"].where.paragraph == 3


def test_bilingual_labels_on_one_or_two_lines(caai_spec: FormSpec, smp_spec: FormSpec) -> None:
    rows = [
        ["项目名称\nProject Title", "大模型幻觉检测与缓解关键技术研究"],
        ["项目负责人 PI Name（必填）", "宋  永刚", "性别\nGender", "Male"],
        ["职称 Title", "副教授", "学位\nDegree", "博士"],
        ["依托单位\nInstitution", "深圳大学"],
        ["邮箱 Email", " song.yonggang@szu.edu.cn ", "电话 Phone", " 130 4027 5979 "],
        ["课题编号\nTopic No.", "ANT-17、幻觉检测与缓解", "研究方向\nResearch Direction", "大模型安全"],
        ["申请金额（万元）\nBudget (10k CNY)", "30"],
    ]
    data = table_form(
        rows, before=["项目申请书 Proposal"], after=["填写说明 Instructions：", "课题编号请填写（如 ANT-07）"]
    )
    reading = read(data, caai_spec)
    assert reading.values() | {} == {
        "project_title": "大模型幻觉检测与缓解关键技术研究",
        "applicant_name": "宋永刚",
        "gender": "男",
        "title": "副教授",
        "degree": "博士",
        "institution": "深圳大学",
        "email": "song.yonggang@szu.edu.cn",
        "phone": "13040275979",
        "topic": "ANT-17",
        "direction": "大模型安全",
        "budget": 30,
    }
    # a spec with only Chinese labels still reads "中文 English" label cells
    assert read(data, smp_spec).value("project_title") == "大模型幻觉检测与缓解关键技术研究"


def test_content_controls_block_and_inline(smp_spec: FormSpec) -> None:
    inline = (
        f"<w:p {W_NS}><w:r><w:t>申请人姓名：</w:t></w:r><w:sdt><w:sdtPr/><w:sdtContent>"
        "<w:r><w:t>赵六</w:t></w:r></w:sdtContent></w:sdt></w:p>"
    )
    block = (
        f"<w:sdt {W_NS}><w:sdtPr/><w:sdtContent>"
        "<w:p><w:r><w:t>项目名称：多模态大模型研究</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>所在单位：浙江大学</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>申报课题：6.2</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>"
    )
    reading = read(body_xml_form([inline, block]), smp_spec)
    assert reading.value("applicant_name") == "赵六"
    assert reading.value("project_title") == "多模态大模型研究"
    assert reading.value("topic") == "6.2"


def test_text_box_is_read_once(smp_spec: FormSpec) -> None:
    box = "".join(
        w_paragraph(text).replace(f" {W_NS}", "")
        for text in ("项目名称：文本框里的项目", "申请人姓名：钱七", "所在单位：南京大学", "申报课题：7.1")
    )
    drawing = (
        f'<w:p {W_NS} xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
        'xmlns:v="urn:schemas-microsoft-com:vml"><w:r><mc:AlternateContent>'
        f'<mc:Choice Requires="wps"><wps:txbx><w:txbxContent>{box}</w:txbxContent></wps:txbx></mc:Choice>'
        f"<mc:Fallback><v:textbox><w:txbxContent>{box}</w:txbxContent></v:textbox></mc:Fallback>"
        "</mc:AlternateContent></w:r></w:p>"
    )
    reading = read(body_xml_form([drawing]), smp_spec)
    assert reading.value("project_title") == "文本框里的项目"
    assert reading.value("applicant_name") == "钱七"
    assert reading.fields["applicant_name"].raw == "钱七"


def test_legacy_form_fields_and_checkboxes(smp_spec: FormSpec) -> None:
    def text_field(label: str, value: str) -> str:
        return (
            f"<w:p {W_NS}><w:r><w:t>{label}：</w:t></w:r>"
            '<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:textInput/></w:ffData></w:fldChar></w:r>'
            '<w:r><w:instrText> FORMTEXT </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
            f'<w:r><w:t>{value}</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        )

    def checkbox(checked: bool) -> str:
        state = "<w:checked/>" if checked else '<w:checked w:val="0"/>'
        return (
            f'<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:checkBox>{state}</w:checkBox></w:ffData>'
            "</w:fldChar></w:r><w:r><w:instrText> FORMCHECKBOX </w:instrText></w:r>"
            '<w:r><w:fldChar w:fldCharType="end"/></w:r>'
        )

    grant = f"<w:p {W_NS}><w:r><w:t>是否获第一期资助：</w:t></w:r>{checkbox(False)}<w:r><w:t>是 </w:t></w:r>"
    grant += f"{checkbox(True)}<w:r><w:t>否</w:t></w:r></w:p>"
    fields = [
        text_field("项目名称", "表单域项目"),
        text_field("申请人姓名", "孙八"),
        text_field("所在单位", "同济大学"),
        text_field("申报课题", "9.2"),
        grant,
    ]
    reading = read(body_xml_form(fields), smp_spec)
    assert reading.value("project_title") == "表单域项目"
    assert reading.value("applicant_name") == "孙八"
    assert reading.value("prior_grant") is False


def test_nested_table_in_a_cell(smp_spec: FormSpec) -> None:
    inner = (
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>手机</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>13900002222</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
    )
    outer = (
        f"<w:tbl {W_NS}><w:tr><w:tc><w:p><w:r><w:t>项目名称</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>嵌套表格项目</w:t></w:r></w:p></w:tc></w:tr>"
        "<w:tr><w:tc><w:p><w:r><w:t>申请人姓名</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>周九</w:t></w:r></w:p></w:tc></w:tr>"
        "<w:tr><w:tc><w:p><w:r><w:t>申报课题</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>4.1</w:t></w:r></w:p></w:tc></w:tr>"
        f"<w:tr><w:tc><w:p><w:r><w:t>联系方式</w:t></w:r></w:p></w:tc><w:tc>{inner}<w:p/></w:tc></w:tr></w:tbl>"
    )
    reading = read(body_xml_form([outer]), smp_spec)
    assert reading.value("phone") == "13900002222"
    assert reading.value("applicant_name") == "周九"


def test_text_outside_the_usual_structure_is_recovered(smp_spec: FormSpec) -> None:
    hidden = "".join(
        w_paragraph(text).replace(f" {W_NS}", "")
        for text in ("项目名称：藏起来的项目", "申请人姓名：吴十", "所在单位：中山大学", "申报课题：1.1")
    )
    reading_or_none = read_document(
        body_xml_form([f"<w:unknownWrapper {W_NS}>{hidden}</w:unknownWrapper>"]), "x.docx", smp_spec
    )
    assert isinstance(reading_or_none, FormReading)
    assert reading_or_none.value("project_title") == "藏起来的项目"


def test_a_cv_is_not_a_form(smp_spec: FormSpec) -> None:
    cv = paragraph_form(
        ["个人简历", "姓名：张三", "性别：男", "工作单位：清华大学", "电子邮箱：a@b.cn", "联系电话：13800001111"]
    )
    assert read_document(cv, "简历.docx", smp_spec) is None


def test_blank_template_has_no_fields(smp_spec: FormSpec) -> None:
    blank = [[row[0], ""] if len(row) == 2 else [row[0], "", row[2], ""] for row in SMP_ROWS]
    reading = read_document(table_form(blank), "申报表.docx", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "no-fields"


def test_broken_documents(smp_spec: FormSpec) -> None:
    good = table_form(SMP_ROWS)
    truncated = read_document(good[: len(good) // 2], "申报表.docx", smp_spec)
    assert isinstance(truncated, Unreadable) and truncated.reason == "corrupt"
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            target.writestr(item, content[: len(content) // 2] if item.filename == "word/document.xml" else content)
    cut_xml = read_document(broken.getvalue(), "申报表.docx", smp_spec)
    assert isinstance(cut_xml, Unreadable) and cut_xml.reason == "corrupt"
    empty = read_document(b"", "申报表.docx", smp_spec)
    assert isinstance(empty, Unreadable) and empty.reason == "corrupt"


def test_encrypted_office_container(smp_spec: FormSpec) -> None:
    container = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + "EncryptionInfo".encode("utf-16-le") + b"\x00" * 600
    )
    reading = read_document(container, "申报表.docx", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason == "encrypted"


def test_bomb_inside_a_word_package(smp_spec: FormSpec) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        package.writestr("word/document.xml", b"<" + b"a" * 80_000_000 + b">")
    reading = read_document(bomb.getvalue(), "申报表.docx", smp_spec)
    assert isinstance(reading, Unreadable) and reading.reason in ("too-large", "archive-refused")


def test_unlabelled_contacts_and_signature_are_guessed_with_low_confidence(smp_spec: FormSpec) -> None:
    lines = [
        "项目名称：古籍标点大模型",
        "所在单位：南京大学",
        "申报课题：7.1",
        "联系方式：wang.fang@nju.edu.cn，13912345678",
        "负责人签名：王芳",
        *NOTES,
    ]
    reading = read(paragraph_form(lines), smp_spec)
    assert reading.value("email") == "wang.fang@nju.edu.cn"
    assert reading.value("phone") == "13912345678"
    assert reading.value("applicant_name") == "王芳"
    assert all(reading.fields[name].confidence <= 0.5 for name in ("email", "phone", "applicant_name"))


def test_a_labelled_blank_is_not_guessed(smp_spec: FormSpec) -> None:
    lines = [
        "项目名称：古籍标点大模型",
        "申请人姓名：王芳",
        "所在单位：南京大学",
        "申报课题：7.1",
        "电子邮箱：",
        "手机：",
        "联系我们：wang.fang@nju.edu.cn",
    ]
    reading = read(paragraph_form(lines), smp_spec)
    assert reading.value("email") is None and reading.value("phone") is None


TEAM_CAPTION = ["项目组主要成员"]
TEAM_HEADER = ["姓名", "单位", "职称", "分工"]
TEAM_MEMBERS = [["王强", "北京大学", "教授", "算法设计"], ["李娜", "复旦大学", "讲师", "数据构建"], ["", "", "", ""]]


def _with_team(applicant_title: str, same_table: bool) -> bytes:
    """The SMP form with the applicant's 职称 as given, and a table of team members after it."""
    rows = [list(row) for row in SMP_ROWS]
    rows[2] = ["出生年月", "1985.03", "职称", applicant_title]
    team = [TEAM_CAPTION, TEAM_HEADER, *TEAM_MEMBERS]
    if same_table:  # one table for the whole form, as many Chinese forms are
        return table_form(rows + team)
    document = docx.Document(io.BytesIO(table_form(rows, after=[])))
    table = document.add_table(rows=len(team), cols=4)
    for cells, texts in zip(table.rows, team, strict=True):
        if len(texts) == 1:
            cells.cells[0].merge(cells.cells[3])
        for cell, text in zip(cells.cells, texts, strict=False):
            cell.text = text
    return docx_bytes(document)


@pytest.mark.parametrize("same_table", [True, False], ids=["one table", "a table of its own"])
@pytest.mark.parametrize("applicant_title", ["副教授", ""], ids=["filled", "left blank"])
def test_a_table_of_team_members_never_stands_in_for_the_applicants_own_cells(
    smp_spec: FormSpec, same_table: bool, applicant_title: str
) -> None:
    """A label the form prints again as a column of the team table (职称) is the applicant's own
    cell: left blank there, the field is missing, not the first member's title or the heading
    beside it; the team's names, units and titles never become the applicant's."""
    reading = read(_with_team(applicant_title, same_table), smp_spec)
    assert reading.value("title") == (applicant_title or None)
    expected = {name: value for name, value in EXPECTED.items() if name != "title"}
    assert {name: reading.value(name) for name in expected} == expected


# the Hundred Family Surnames' compound surnames still in common use (written out, not imported)
COMPOUND_SURNAMES = ["欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "慕容", "司徒", "令狐", "夏侯"]
COMPOUND_SURNAMES += ["尉迟", "公孙", "长孙", "宇文", "端木", "西门", "南宫", "澹台", "呼延", "独孤"]
GUESSED_ORGS = ["清华大学", "复旦大学附属华山医院", "中国科学院自动化研究所", "南京大学人工智能学院"]


@pytest.mark.parametrize(
    "line, institution",
    [
        (f"{context}{link}{org}", org)
        for context in ("本人的工作单位", "我所在的单位", "申请人目前的依托单位")
        for link in ("为", "是", "在", "：", " ", "名称为")
        for org in GUESSED_ORGS
    ]
    + [(f"{org}是我的工作单位", org) for org in GUESSED_ORGS],
)
def test_a_guessed_institution_is_the_organisation_without_the_words_around_it(
    smp_spec: FormSpec, line: str, institution: str
) -> None:
    """With no 所在单位 label, the institution is guessed from a line that speaks of the unit: the
    organisation it names, never "单位为清华大学" with the words that introduce it."""
    reading = read(paragraph_form(["项目名称：古籍标点大模型", "申请人姓名：王芳", line, "申报课题：7.1"]), smp_spec)
    assert reading.value("institution") == institution
    assert reading.fields["institution"].confidence <= 0.5


@pytest.mark.parametrize(
    "name",
    [surname + given for surname in COMPOUND_SURNAMES for given in ("明", "娜娜")],
)
@pytest.mark.parametrize("signature", ["申请人签字：{name}", "负责人签名 {name} 日期：2024年8月1日"])
def test_a_signature_with_a_compound_surname_gives_the_whole_name(
    smp_spec: FormSpec, name: str, signature: str
) -> None:
    """欧阳, 司马, 诸葛 … are surnames of two characters: a signature 欧阳娜娜 is guessed whole."""
    lines = ["项目名称：古籍标点大模型", "所在单位：南京大学", signature.format(name=name), "申报课题：7.1"]
    reading = read(paragraph_form(lines), smp_spec)
    assert reading.value("applicant_name") == name
