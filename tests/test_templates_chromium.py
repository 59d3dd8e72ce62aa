"""The HTML acknowledgements as a browser engine draws them: Debian's headless Chromium.

Screenshots are kept under artifacts/screenshots/ for a person to look at. Without Chromium the
tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import dataclasses
import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from PIL import Image

from mailbot.acknowledge import OUTCOMES, AckContext, compose_acknowledgement, make_message_id
from mailbot.config import CallSettings, load_settings
from templates import TemplateSet
from tests.support.chromium import chromium_binary, run_chromium

pytestmark = pytest.mark.chromium

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"
SETTINGS = load_settings(REPO / "config.example.toml")
TEMPLATES = TemplateSet()
WIDTH, HEIGHT = 900, 1400


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_binary()


def _context(call: CallSettings, outcome: str) -> AckContext:
    reference = f"{call.reference_prefix}-0042"
    fields = {
        "project_title": "面向临床诊疗的可信医学问答大模型研究",
        "applicant_name": "陈美玲",
        "institution": "复旦大学",
        "email": None if outcome == "incomplete" else "chenmeiling@fudan.edu.cn",
        "phone": None,
        "topic": call.topic[0].code,
        "budget": 20.0,
    }
    return AckContext(
        call=call,
        outcome=outcome,
        reference=reference,
        fields=fields if outcome not in ("no_attachment", "unreadable") else {},
        form_file="申报表-陈美玲.docx" if outcome != "no_attachment" else None,
        missing=("email", "phone") if outcome == "incomplete" else (),
        arrival=datetime(2024, 8, 20, 9, 30, 5, tzinfo=UTC) if outcome != "late" else call.deadline,
        supersedes_reference=f"{call.reference_prefix}-0007" if outcome == "revision" else None,
        duplicate_of_reference=f"{call.reference_prefix}-0003" if outcome == "duplicate" else None,
        unreadable_reason="scanned" if outcome == "unreadable" else None,
        original_message_id="<original@fudan.edu.cn>",
        original_references=(),
        original_subject="申报材料",
        reply_to="chenmeiling@fudan.edu.cn",
        applicant_email=None,
        message_id=make_message_id(call, reference, outcome),
    )


def _html(ctx: AckContext) -> str:
    raw = bytes(compose_acknowledgement(ctx, TEMPLATES, datetime(2024, 8, 20, 9, 31, tzinfo=UTC)))
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _hex(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


CASES = [(SETTINGS.call_by_id("smp-zhipu-2024"), outcome) for outcome in OUTCOMES] + [
    (SETTINGS.call_by_id("caai-ant-2024"), "accepted")
]


@pytest.mark.parametrize(("call", "outcome"), CASES, ids=[f"{c.id}-{o}" for c, o in CASES])
def test_the_html_answer_draws_as_laid_out(chromium: str, tmp_path: Path, call: CallSettings, outcome: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx = _context(call, outcome)
    page = SCREENSHOTS / f"{call.id}-{outcome}.html"
    page.write_text(_html(ctx), encoding="utf-8")
    shot = SCREENSHOTS / f"{call.id}-{outcome}.png"
    shot.unlink(missing_ok=True)

    run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    )
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "text was drawn, not a blank page"
        accent = _hex(TEMPLATES.table("ack/outcomes.toml")[outcome]["accent"])
        band = pixels.crop((0, 0, WIDTH, 120))
        band_colours = {colour for _, colour in band.getcolors(maxcolors=1 << 20) or []}
        assert accent in band_colours, "the inline header colour was applied"
        white = pixels.crop((WIDTH // 2 - 100, 200, WIDTH // 2 + 100, 260))
        assert (255, 255, 255) in {colour for _, colour in white.getcolors(maxcolors=1 << 20) or []}

    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    assert call.name_zh in dom and call.name_en in dom
    assert "您好" in dom and "Dear applicant" in dom
    assert ctx.reference is not None and ctx.reference in dom
    assert "<script" not in dom.lower()
    if outcome not in ("no_attachment", "unreadable"):
        assert "面向临床诊疗的可信医学问答大模型研究" in dom and "复旦大学" in dom


def test_hostile_markup_stays_text_in_the_browser(chromium: str, tmp_path: Path) -> None:
    call = SETTINGS.call_by_id("smp-zhipu-2024")
    ctx = _context(call, "accepted")
    hostile = '<img src=x onerror="document.title=1"><script>document.title="owned"</script>'
    ctx = dataclasses.replace(ctx, fields={**ctx.fields, "project_title": hostile})
    page = tmp_path / "hostile.html"
    page.write_text(_html(ctx), encoding="utf-8")
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    assert "<script" not in dom and "<img" not in dom
    assert "&lt;script&gt;" in dom, "the title is shown as the text it is"


# A phone as most applicants read mail on (WeChat / QQ mail apps), and a desktop window.
PHONE, DESKTOP = 375, 1024
# The headless window cannot be narrower than 500 px for --dump-dom, so the probe lays the page out
# in a body of the width under test and reports how far right any element reaches.
_MEASURE = (
    "<script>window.addEventListener('load', function () {"
    "var right = 0; var all = document.body.getElementsByTagName('*');"
    "for (var i = 0; i < all.length; i++) { right = Math.max(right, all[i].getBoundingClientRect().right); }"
    "var d = document.createElement('div'); d.id = 'measured'; d.textContent = Math.ceil(right);"
    "document.body.appendChild(d); });</script></body>"
)


@pytest.mark.parametrize("width", [PHONE, DESKTOP])
@pytest.mark.parametrize(("call", "outcome"), CASES, ids=[f"{c.id}-{o}" for c, o in CASES])
def test_the_html_answer_fits_a_phone_and_a_desktop(
    chromium: str, tmp_path: Path, call: CallSettings, outcome: str, width: int
) -> None:
    """Nothing is wider than the window: no sideways scrolling, nothing clipped on a phone."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    html = _html(_context(call, outcome))
    page = SCREENSHOTS / f"{call.id}-{outcome}-{width}.html"
    page.write_text(html, encoding="utf-8")
    shot = SCREENSHOTS / f"{call.id}-{outcome}-{width}.png"
    shot.unlink(missing_ok=True)
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={width},1600", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == (width, 1600)

    probe = tmp_path / "probe.html"
    narrow = html.replace('<body style="', f'<body style="width:{width}px;', 1).replace("</body>", _MEASURE)
    probe.write_text(narrow, encoding="utf-8")
    dom = run_chromium(
        chromium,
        tmp_path / "profile",
        f"--window-size={width},1600",
        "--virtual-time-budget=2000",
        "--dump-dom",
        probe.as_uri(),
    ).stdout
    found = re.search(r'id="measured">(\d+)<', dom)
    assert found, dom[-500:]
    assert int(found.group(1)) <= width, f"content reaches {found.group(1)} px in a {width} px window"
