"""The fields the readers and the rules know, with the words forms use for their labels.

The names are the ones the rest of mailbot relies on (identity, exports, acknowledgements); the
synonyms are how Chinese and English forms print the label. ``mailbot call new`` matches a blank
form's labels to them (parsers.label_matching), and finds the form pages of a PDF by them.
"""

from __future__ import annotations

from dataclasses import dataclass

from parsers.spec import FieldKind, FieldSpec, FormSpec


@dataclass(frozen=True)
class KnownField:
    """A field the readers and the rules know, with the words forms use for its label."""

    name: str
    kind: FieldKind
    synonyms: tuple[str, ...]


# The name is the one the rest of mailbot relies on (identity, exports, acknowledgements).
KNOWN_FIELDS: tuple[KnownField, ...] = (
    KnownField(
        "project_title",
        "text",
        ("项目名称", "课题名称", "项目题目", "项目标题", "题目", "Project Title", "Project Name", "Proposal Title"),
    ),
    KnownField(
        "applicant_name",
        "name",
        (
            "申请人",
            "申请人姓名",
            "姓名",
            "负责人",
            "项目负责人",
            "主持人",
            "申报人",
            "Applicant",
            "Name",
            "Full Name",
            "PI",
            "PI Name",
            "Principal Investigator",
            "Applicant Name",
        ),
    ),
    KnownField("gender", "gender", ("性别", "Gender", "Sex")),
    KnownField("birth", "date", ("出生年月", "出生日期", "Date of Birth", "Birth Date", "DOB")),
    KnownField(
        "title",
        "title",
        ("职称", "职务/职称", "职务", "专业技术职务", "Title", "Professional Title", "Academic Title", "Position"),
    ),
    KnownField("degree", "degree", ("学位", "最高学位", "Degree", "Highest Degree")),
    KnownField(
        "institution",
        "institution",
        (
            "单位",
            "所在单位",
            "工作单位",
            "依托单位",
            "单位名称",
            "申请单位",
            "所在机构",
            "Institution",
            "Affiliation",
            "Organization",
            "Organisation",
            "University",
            "Employer",
        ),
    ),
    KnownField(
        "department", "text", ("院系", "所在院系", "学院", "部门", "所在部门", "Department", "School", "Faculty")
    ),
    KnownField(
        "email",
        "email",
        ("邮箱", "电子邮箱", "电子邮件", "Email", "E-mail", "Email Address", "E-mail Address"),
    ),
    KnownField(
        "phone",
        "phone",
        (
            "手机",
            "手机号",
            "手机号码",
            "联系电话",
            "电话",
            "移动电话",
            "Phone",
            "Mobile",
            "Tel",
            "Telephone",
            "Phone Number",
            "Mobile Phone",
        ),
    ),
    KnownField("direction", "text", ("申报方向", "研究方向", "方向", "Research Direction", "Direction", "Track")),
    KnownField(
        "topic",
        "topic",
        (
            "申报课题",
            "课题",
            "课题编号",
            "选题",
            "课题代码",
            "研究课题",
            "指南方向",
            "Topic",
            "Topic No.",
            "Topic Code",
        ),
    ),
    KnownField(
        "budget",
        "money",
        (
            "申请经费",
            "经费",
            "申请金额",
            "预算",
            "经费预算",
            "资助金额",
            "Budget",
            "Requested Budget",
            "Amount Requested",
            "Requested Amount",
        ),
    ),
)


def discovery_spec() -> FormSpec:
    """Every known label, so that the PDF reader finds the pages of an unknown call's form."""
    return FormSpec("discovery", tuple(FieldSpec(f.name, f.kind, f.synonyms) for f in KNOWN_FIELDS))
