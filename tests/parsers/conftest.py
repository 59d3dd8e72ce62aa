"""Fixtures for the parser tests: the two calls' form specs and a LibreOffice that may be absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailbot.config import load_settings
from parsers.spec import FormSpec
from tests.parsers.builders import office_binary

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def smp_spec() -> FormSpec:
    return load_settings(REPO / "config.example.toml").call_by_id("smp-zhipu-2024").form_spec


@pytest.fixture(scope="session")
def caai_spec() -> FormSpec:
    return load_settings(REPO / "config.example.toml").call_by_id("caai-ant-2024").form_spec


@pytest.fixture(scope="session")
def soffice() -> str:
    """LibreOffice for making PDFs; skipped where it is not installed, unless under CI."""
    binary = office_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("LibreOffice (soffice) is required under CI=true")
        pytest.skip("LibreOffice (soffice) is not installed")
    return binary
