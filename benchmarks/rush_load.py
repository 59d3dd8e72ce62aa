"""The rush's load: last-minute submissions to the two calls, Word forms, PDF forms and the rest.

Each message is planned with where it goes, when it arrives and whether it should be answered;
the PDF forms are made once by LibreOffice headless and reused under fresh Message-IDs.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import io
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import docx
import pdfplumber

from mailbot.config import CallSettings, Settings
from mailbot.samples import DOCX, _mail, _person, form_document

PDF = "application/pdf"
HEADERS_ONLY = email.parser.BytesParser(policy=email.policy.compat32)
SOFFICE_TIMEOUT_S = 300
PDF_APPLICANT_SERIALS = 90_000
DEFAULT_PDF_SHARE = 0.4  # of first submissions; the rest carry a Word form

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "军", "杰", "涛", "明", "超", "华", "平", "辉", "鹏", "婷"]
INSTITUTIONS = [
    ("清华大学", "tsinghua.edu.cn"),
    ("北京大学", "pku.edu.cn"),
    ("浙江大学", "zju.edu.cn"),
    ("复旦大学", "fudan.edu.cn"),
    ("南京大学", "nju.edu.cn"),
    ("武汉大学", "whu.edu.cn"),
    ("中山大学", "sysu.edu.cn"),
    ("上海交通大学", "sjtu.edu.cn"),
    ("中国科学院自动化研究所", "ia.ac.cn"),
    ("哈尔滨工业大学", "hit.edu.cn"),
]
TITLES = ["教授", "副教授", "研究员", "副研究员", "讲师", "助理研究员"]
BODY_TEXT = (
    "本项目面向大模型在交叉学科中的应用，拟研究面向科学数据的知识抽取、推理与验证方法，"
    "构建可复现的评测基准，并在材料、生物与社会科学场景中开展示范应用。"
)


@dataclass(frozen=True)
class Planned:
    """One message of the load: where it goes, when it arrives, and whether it should be answered."""

    user: str
    raw: bytes
    message_id: str
    arrival: datetime
    kind: str  # docx | pdf | revision | second-project | auto-reply
    answered: bool


@dataclass
class Applicant:
    call: CallSettings
    name: str
    email: str
    values: dict[str, object]
    messages: int = 1


def header_of(raw: bytes, name: str) -> str:
    """One header of a message, from its header section alone: the harness's own cost stays small."""
    headers = HEADERS_ONLY.parsebytes(raw, headersonly=True)
    return str(headers.get(name, "")).strip()


def message_id_of(raw: bytes) -> str:
    return header_of(raw, "Message-ID")


def padded_form(call: CallSettings, values: dict[str, object], extra_pages: int) -> bytes:
    """The Word form followed by ``extra_pages`` pages of proposal text (a PDF's usual shape)."""
    document = docx.Document(io.BytesIO(form_document(call, values)))
    for page in range(extra_pages):
        document.add_page_break()  # type: ignore[no-untyped-call]
        document.add_heading(f"{page + 1}. 研究内容与技术路线", level=2)
        for _ in range(4):
            document.add_paragraph(BODY_TEXT * 3)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def convert_to_pdf(documents: dict[str, bytes], workdir: Path) -> dict[str, bytes]:
    """Convert .docx files with LibreOffice headless in one call, with a profile of its own."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        print("soffice (LibreOffice) is not installed: the load carries .docx forms only", flush=True)
        return {}
    source, target, profile = workdir / "docx", workdir / "pdf", workdir / "profile"
    source.mkdir()
    for name, data in documents.items():
        (source / f"{name}.docx").write_bytes(data)
    command = [
        soffice,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--convert-to",
        "pdf",
        "--outdir",
        str(target),
        *sorted(str(p) for p in source.glob("*.docx")),
    ]
    completed = subprocess.run(command, capture_output=True, timeout=SOFFICE_TIMEOUT_S, check=False)
    converted = {name: (target / f"{name}.pdf") for name in documents}
    missing = [name for name, path in converted.items() if not path.exists()]
    if missing:
        print(f"soffice did not convert {missing}: {completed.stderr.decode(errors='replace')[-500:]}", flush=True)
    return {name: path.read_bytes() for name, path in converted.items() if path.exists()}


def pdf_forms(calls: Sequence[CallSettings], per_call: int, rng: random.Random) -> dict[str, list[bytes]]:
    """``per_call`` PDF forms for each call, of 2 to 15 pages, made once and reused."""
    documents: dict[str, bytes] = {}
    for call in calls:
        for index in range(per_call):
            # addresses no sender of the load uses: the answers to these forms' applicants pile up
            name, email_address = _applicant_identity(rng, PDF_APPLICANT_SERIALS + index)
            institution = INSTITUTIONS[index % len(INSTITUTIONS)][0]
            values = _person(call, name, institution, email_address, rng.choice(TITLES), index)
            values["phone"] = _mobile(PDF_APPLICANT_SERIALS + index)
            extra = 1 + (index * 13) // max(1, per_call - 1) if per_call > 1 else rng.randint(1, 14)
            documents[f"{call.id}-{index:02d}"] = padded_form(call, values, extra)
    with tempfile.TemporaryDirectory(prefix="rush-soffice-") as workdir:
        started = time.perf_counter()
        converted = convert_to_pdf(documents, Path(workdir))
    if converted:
        pages = sorted(_page_count(data) for data in converted.values())
        print(
            f"converted {len(converted)} forms to PDF in {time.perf_counter() - started:.1f} s "
            f"(pages: {', '.join(map(str, pages))})",
            flush=True,
        )
    return {call.id: [data for name, data in sorted(converted.items()) if name.startswith(call.id)] for call in calls}


def _page_count(pdf: bytes) -> int:
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        return len(document.pages)


def _applicant_identity(rng: random.Random, serial: int) -> tuple[str, str]:
    name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.randint(1, 2)))
    domain = INSTITUTIONS[serial % len(INSTITUTIONS)][1]
    return name, f"applicant{serial:05d}@{domain}"


def _mobile(serial: int) -> str:
    """Every applicant their own mobile number, as in real forms (the sample forms share one)."""
    return f"137{serial:08d}"


def _out_of_office(sender: tuple[str, str], to: str, arrival: datetime) -> bytes:
    """An automatic reply: never answered, and never to count as a submission."""
    extra = {"Auto-Submitted": "auto-replied"}
    return _mail(sender, to, "自动回复: 申报通知", arrival, "我正在出差，回来后回复您。", extra_headers=extra)


def build_load(
    settings: Settings,
    n: int,
    pdfs: dict[str, list[bytes]],
    rng: random.Random,
    window: timedelta,
    pdf_share: float = DEFAULT_PDF_SHARE,
) -> list[Planned]:
    """N messages arriving over ``window`` before each call's deadline, busier as it nears.

    ``pdf_share`` of the first submissions carry a PDF from ``pdfs`` (none when there are none).
    """
    users = {call_id: box.user for box in settings.mailbox for call_id in box.calls}
    applicants: list[Applicant] = []
    out: list[Planned] = []
    for serial in range(n):
        call = settings.call[serial % len(settings.call)]
        arrival = call.deadline - window * (rng.random() ** 2) - timedelta(seconds=5)
        to = call.addresses[0]
        roll = rng.random()
        earlier = [a for a in applicants if a.call.id == call.id and a.messages < 3]
        if roll < 0.04:
            raw, kind, answered = (
                _out_of_office(_applicant_identity(rng, 50_000 + serial), to, arrival),
                "auto-reply",
                False,
            )
        elif roll < 0.14 and earlier:
            applicant = rng.choice(earlier)
            applicant.messages += 1
            if roll < 0.10:
                applicant.values["phone"] = f"139{rng.randint(0, 99_999_999):08d}"
                kind, subject, body = "revision", "申报材料（更新版）", "修改了联系方式，以此版为准。"
            else:
                topic = call.topic[rng.randrange(len(call.topic))].code if call.topic else ""
                applicant.values.update(project_title=f"第二个项目：面向多模态数据的智能体研究{serial}", topic=topic)
                kind, subject, body = "second-project", "再次申报", "我还有一个项目想申报。"
            attachment = ("申报表.docx", form_document(call, applicant.values), DOCX)
            raw = _mail((applicant.name, applicant.email), to, subject, arrival, body, [attachment])
            answered = True
        else:
            name, address = _applicant_identity(rng, serial)
            institution = INSTITUTIONS[serial % len(INSTITUTIONS)][0]
            values = _person(call, name, institution, address, rng.choice(TITLES), serial)
            values["phone"] = _mobile(serial)
            subject = f"{call.reference_prefix} 申报-{name}-{institution}"
            if pdfs.get(call.id) and rng.random() < pdf_share:
                attachment = (f"申报书-{name}.pdf", rng.choice(pdfs[call.id]), PDF)
                kind = "pdf"
            else:
                attachment = (f"申报表-{name}.docx", form_document(call, values), DOCX)
                kind = "docx"
                applicants.append(Applicant(call, name, address, values))
            raw = _mail((name, address), to, subject, arrival, "您好，附件是申报材料，请查收。", [attachment])
            answered = True
        out.append(Planned(users[call.id], raw, message_id_of(raw), arrival, kind, answered))
    return sorted(out, key=lambda p: p.arrival)
