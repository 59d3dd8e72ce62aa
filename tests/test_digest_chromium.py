"""The digest's HTML as a browser draws it: headless Chromium takes a screenshot and dumps the DOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mailbot.config import Settings
from mailbot.digest.render import render_digest
from storage import Storage
from templates import TemplateSet
from tests.support.chromium import chromium_binary, run_chromium
from tests.test_digest import digest_of, make_settings, make_store, populate

pytestmark = pytest.mark.chromium

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"
WIDTH, HEIGHT = 1000, 1600


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_chromium(chromium_binary(), tmp_path / "profile", *arguments)


@pytest.fixture
def digest_html(tmp_path: Path) -> tuple[Path, Settings]:
    settings = make_settings(tmp_path / "data")
    store: Storage = make_store(settings)
    populate(store)
    _subject, _text, html = render_digest(digest_of(store, settings, late=True), TemplateSet())
    store.engine.dispose()
    page = tmp_path / "digest.html"
    page.write_text(html, encoding="utf-8")
    return page, settings


def test_digest_renders_in_chromium(tmp_path: Path, digest_html: tuple[Path, Settings]) -> None:
    page, _settings = digest_html
    shot = tmp_path / "digest.png"
    result = chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the screenshot is nearly blank"
        # the header bar is drawn in the accent colour, the page around the card in light grey
        assert pixels.getpixel((500, 40)) == (0x1F, 0x3A, 0x5F)
        assert pixels.getpixel((5, 5)) == (0xF2, 0xF4, 0xF7)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / "digest.png")

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for expected in (
        "每日摘要",
        "本摘要为补发",
        "需要人工处理",
        "待裁定的重复申请",
        "陈老师",
        "SMP24-0005",
        "王芳",
        "北京大学",
        "大模型+教育",
        "6 天 16 小时",
    ):
        assert expected in text, expected
    assert "<script>alert" not in text
