"""Settings: the example loads, errors name the bad key, secrets come only from the environment."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import ConfigError, load_settings, parse_settings, resolve_secret

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_example_config_loads_with_both_calls() -> None:
    settings = load_settings(EXAMPLE)
    assert [c.id for c in settings.call] == ["smp-zhipu-2024", "caai-ant-2024"]
    smp = settings.call_by_id("smp-zhipu-2024")
    assert smp.deadline.isoformat() == "2024-09-09T00:00:00+08:00"
    assert len(smp.form_spec.topics) == 29
    assert len(settings.call_by_id("caai-ant-2024").form_spec.topics) == 25
    assert settings.mailbox_by_name("smp").calls == ["smp-zhipu-2024"]
    assert "myjj@caai.cn" in settings.own_addresses


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda raw: raw["mailbox"][0].update(tls="tls"), "[[mailbox]] #1 (smp) tls"),
        (lambda raw: raw["call"][1].update(deadline="2024-06-01"), "[[call]] #2 (caai-ant-2024) deadline"),
        (lambda raw: raw["mailbox"][1].update(calls=["nope"]), "unknown calls: nope"),
        (lambda raw: raw["smtp"].update(port=0), "smtp port"),
        (lambda raw: raw["call"][0].update(timezone="Mars/Olympus"), "unknown time zone"),
        (lambda raw: raw["mailbox"][0].update(pasword_env="X"), "pasword_env"),
    ],
)
def test_errors_name_the_bad_key(change: Any, expected: str) -> None:
    raw = _example()
    change(raw)
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, "mailbot.toml")
    assert "mailbot.toml" in str(caught.value)
    assert expected in str(caught.value)


def test_a_naive_deadline_is_refused() -> None:
    raw = _example()
    raw["call"][0]["deadline"] = tomllib.loads("d = 2024-09-09T00:00:00")["d"]
    with pytest.raises(ConfigError, match="UTC offset"):
        parse_settings(raw)


def test_secrets_come_from_the_environment_only() -> None:
    settings = load_settings(EXAMPLE)
    box = settings.mailbox_by_name("smp")
    with pytest.raises(ConfigError, match="MAILBOT_SMP_PASSWORD is not set"):
        resolve_secret(box, {})
    assert resolve_secret(box, {"MAILBOT_SMP_PASSWORD": "s3cret"}) == "s3cret"


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "absent.toml")
