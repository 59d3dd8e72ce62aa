"""Applicant identity: names, contacts and institutions written in many ways compare equal, homonyms don't."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.identity import (
    Identity,
    identity_of,
    institution_from_email,
    is_mobile,
    match_reason,
    normalise_email,
    normalise_name,
    normalise_phone,
    same_person,
    similar_title,
    title_similarity,
)
from mailbot.institutions import normalise_institution

# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "variants",
    [
        (
            "张伟",
            "張偉",
            "张 伟",
            "Zhang Wei",
            "Wei Zhang",
            "ZHANG Wei",
            "ＺＨＡＮＧ　Ｗｅｉ",
            "张伟教授",
            "Prof. Wei Zhang",
        ),
        ("赵欣怡", "Xinyi Zhao", "Zhao Xinyi", "Zhao Xin-Yi", "XinYi ZHAO"),
        ("陈美玲", "陳美玲", "Chen Meiling", "Meiling Chen"),
        ("吕婉婷", "Lyu Wanting", "Wanting Lü", "Lv Wanting"),
        ("欧阳娜娜", "Ouyang Nana", "Nana Ouyang"),
    ],
)
def test_name_variants_share_a_key(variants: tuple[str, ...]) -> None:
    keys = {normalise_name(v) for v in variants}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(
    ("name", "latin"),
    [
        ("曾小明", "Zeng Xiaoming"),
        ("单雄信", "Shan Xiongxin"),
        ("解晓东", "Xie Xiaodong"),
        ("仇建", "Qiu Jian"),
        ("区伟", "Ou Wei"),
        ("查良镛", "Zha Liangyong"),
        ("朴树", "Piao Shu"),
        ("盖文", "Ge Wen"),
        ("乐嘉", "Yue Jia"),
        ("尉迟敬", "Yuchi Jing"),
    ],
)
def test_surnames_use_their_surname_reading(name: str, latin: str) -> None:
    assert normalise_name(name) == normalise_name(latin)


def test_different_names_differ() -> None:
    assert normalise_name("张伟") != normalise_name("张为民")
    assert normalise_name("John Smith") == "john smith"
    assert normalise_name("") == ""


# ---------------------------------------------------------------------------- contacts


def test_email_and_phone_normalisation() -> None:
    assert normalise_email("Ｚhang＠PKU.edu.cn") == "zhang@pku.edu.cn"
    assert normalise_email("张伟 <Zhang.Wei@Fudan.edu.cn>") == "zhang.wei@fudan.edu.cn"
    assert normalise_email("无") is None
    assert normalise_email(None) is None
    assert normalise_phone("138-1234-5678") == "13812345678"
    assert normalise_phone("+86 138 1234 5678") == "13812345678"
    assert normalise_phone("１３８１２３４５６７８") == "13812345678"
    assert normalise_phone("010-62781234") == "01062781234"
    assert normalise_phone(13812345678.0) == "13812345678"
    assert normalise_phone("无") is None
    assert is_mobile("13812345678")
    assert not is_mobile("01062781234")


# ---------------------------------------------------------------------------- institutions


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("清华大学", "清华大学"),
        ("清华", "清华大学"),
        ("清華大學", "清华大学"),
        ("清华大学计算机系", "清华大学"),
        ("清华大学 计算机科学与技术系", "清华大学"),
        ("Tsinghua University", "清华大学"),
        ("tsinghua  university", "清华大学"),
        ("Department of Computer Science, Tsinghua University", "清华大学"),
        ("THU", "清华大学"),
        ("川大", "四川大学"),
        ("复旦", "复旦大学"),
        ("School of Software, Fudan University", "复旦大学"),
        ("East China University of Political Science and Law", "华东政法大学"),
        ("China University of Political Science and Law", "中国政法大学"),
        ("中科院软件所", "中国科学院软件研究所"),
        ("中国科学院软件研究所", "中国科学院软件研究所"),
        ("Institute of Software, Chinese Academy of Sciences", "中国科学院软件研究所"),
        ("中国科学院自动化研究所模式识别国家重点实验室", "中国科学院自动化研究所"),
        ("中国科学院大学人工智能学院", "中国科学院大学"),
        ("中国石油大学（北京）", "中国石油大学(北京)"),
        ("ＰＫＵ", "北京大学"),
        ("北京理工大学计算机学院", "北京理工大学"),
        ("Xi’an Jiaotong University", "西安交通大学"),
        ("Sichuan Univ.", "四川大学"),
        ("Inst. of Software, Chinese Acad. of Sci.", "中国科学院软件研究所"),
        ("Northwest A & F University", "西北农林科技大学"),
        ("Tsinghua University Department of Computer Science", "清华大学"),
        ("School of Law East China University of Political Science and Law", "华东政法大学"),
    ],
)
def test_institution_aliases(written: str, canonical: str) -> None:
    assert normalise_institution(written) == canonical


def test_unknown_institutions_keep_their_name_without_department() -> None:
    assert normalise_institution("某某大学信息学院") == "某某大学"
    assert normalise_institution("中国科学院某某研究所") == "中国科学院某某研究所"
    # a short name is not a prefix of another university's name
    assert normalise_institution("西交利物浦大学") == "西交利物浦大学"
    # nor is a known English name part of a longer unknown one
    assert normalise_institution("Nanjing University of Finance and Economics") != "南京大学"
    assert normalise_institution("North China University of Technology") != "中国石油大学(华东)"
    assert normalise_institution("") == ""


def test_call_aliases_win_and_resolve_through_the_table() -> None:
    assert normalise_institution("贵所", {"贵所": "之江"}) == "之江实验室"
    assert normalise_institution("XYZ Lab", {"xyz lab": "某某研究院"}) == "某某研究院"


def test_institution_from_email() -> None:
    assert institution_from_email("a@mails.tsinghua.edu.cn") == "清华大学"
    assert institution_from_email("zhang.jing@mail.sysu.edu.cn") == "中山大学"
    assert institution_from_email("g.lv@iscas.ac.cn") == "中国科学院软件研究所"
    assert institution_from_email("someone@qq.com") is None
    assert institution_from_email("not an address") is None


def test_packaged_table_is_consistent() -> None:
    rows = json.loads(resources.files("mailbot").joinpath("data", "institutions.json").read_text("utf-8"))
    assert len(rows) >= 100
    domains = [d for row in rows for d in row["domains"]]
    assert len(domains) == len(set(domains))
    for row in rows:
        # each canonical name resolves to itself: the table agrees with the normaliser
        assert normalise_institution(row["name"]) == row["name"], row["name"]
        for english in row["english"]:
            assert normalise_institution(english) == row["name"], english


# ---------------------------------------------------------------------------- people

ALIASES = {"清华": "清华大学"}


def test_identity_of_reads_the_form() -> None:
    identity = identity_of(
        {
            "applicant_name": "张 伟",
            "institution": "清华",
            "email": "ZhangWei@Tsinghua.edu.cn",
            "phone": "138-1234-5678",
        },
        "secretary@tsinghua.edu.cn",
        ALIASES,
    )
    assert identity == Identity("zhangwei@tsinghua.edu.cn", "13812345678", "wei zhang", "清华大学")


def test_identity_institution_falls_back_to_mail_domains() -> None:
    from_form_email = identity_of({"applicant_name": "吕国华", "email": "g.lv@iscas.ac.cn"}, None, {})
    assert from_form_email.institution_key == "中国科学院软件研究所"
    from_sender = identity_of({"applicant_name": "吕国华"}, "g.lv@iscas.ac.cn", {})
    assert from_sender.institution_key == "中国科学院软件研究所"
    # the sender's address never becomes the applicant's e-mail (secretaries send for others)
    assert from_sender.email is None


def person(name: str | None, institution: str | None, email: str | None = None, phone: str | None = None) -> Identity:
    return identity_of(
        {"applicant_name": name, "institution": institution, "email": email, "phone": phone}, None, ALIASES
    )


def test_same_email_or_mobile_is_the_same_person() -> None:
    first = person("张诗涵", "四川大学", "zhangs@scu.edu.cn", "15895289455")
    new_mobile = person("张诗涵", "川大", "zhangs@scu.edu.cn", "17804827780")
    assert match_reason(first, new_mobile) == "email"
    other_address = person("Zhang Shihan", None, "shihan@gmail.com", "15895289455")
    assert match_reason(first, other_address) == "mobile"


def test_same_name_and_institution_is_the_same_person() -> None:
    incomplete = person("张静", "中山大学")
    completed = person("张静", "Sun Yat-sen University", "zhang.jing@mail.sysu.edu.cn", "15098798557")
    assert match_reason(incomplete, completed) == "name+institution"


def test_homonyms_at_different_institutions_are_different() -> None:
    suzhou = person("邱子轩", "苏州大学", "qiuzixuan1979@gmail.com", "18231802662")
    guangzhou = person("邱子轩", "中山大学", "qiu_zixuan@mail.sysu.edu.cn", "18885345365")
    assert not same_person(suzhou, guangzhou)


def test_shared_contacts_do_not_merge_different_names() -> None:
    # a lab secretary writes the lab's address and office phone into two professors' forms
    one = person("李建华", "上海财经大学", "lab@sufe.edu.cn", "13800000000")
    other = person("王国华", "上海财经大学", "lab@sufe.edu.cn", "13800000000")
    assert not same_person(one, other)
    # a shared landline is never evidence
    assert not same_person(person(None, None, None, "01062781234"), person(None, None, None, "01062781234"))


def test_same_name_same_place_but_all_contacts_different_is_not_merged() -> None:
    one = person("张伟", "清华大学", "zw1@tsinghua.edu.cn", "13811111111")
    other = person("张伟", "清华大学", "zw2@tsinghua.edu.cn", "13922222222")
    assert not same_person(one, other)


def test_missing_values_do_not_match() -> None:
    assert not same_person(person(None, None), person(None, None))
    assert not same_person(person("张伟", None), person("张伟", None))


# ---------------------------------------------------------------------------- titles


def test_similar_titles() -> None:
    assert similar_title("面向政务热线的大模型智能工单分派研宄", "面向政务热线的大模型智能工单分派研究")
    assert similar_title("大模型知识编辑的局部性与泛化性研究", "大模型知识编辑的局部性和泛化性研究")
    assert similar_title("中文大模型社会偏见的测量与缓解", "中文大模型社会偏见的测量与缓解方法研究")
    assert similar_title("Scaling laws for LLMs", "scaling laws for LLMs ")
    assert similar_title("視覺語言模型", "视觉语言模型")


def test_different_projects_are_not_similar() -> None:
    assert not similar_title("大模型合成数据的生成与质量控制方法", "大模型低比特量化与模型压缩方法研究")
    assert not similar_title("面向具身智能的大规模仿真评测平台构建", "大模型在高校程序设计课程中的应用与效果评估")
    assert not similar_title("面向社交媒体的大模型舆情演化分析方法", "社交媒体健康谣言传播的大模型分析方法")
    assert not similar_title(None, "x")
    assert title_similarity("", "") == 0.0


# ---------------------------------------------------------------------------- any text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalisers_accept_any_text(text: str) -> None:
    name_key = normalise_name(text)
    assert normalise_name(text) == name_key
    assert isinstance(normalise_institution(text, ALIASES), str)
    email = normalise_email(text)
    assert email is None or normalise_email(email) == email
    phone = normalise_phone(text)
    assert phone is None or phone.isdigit()
    assert isinstance(similar_title(text, text), bool)
