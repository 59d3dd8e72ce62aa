"""The development corpus: every readable form's fields exactly as the truth has them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mailbot.config import load_settings
from parsers import read_message

REPO = Path(__file__).resolve().parents[2]


def test_dev_corpus_fields_and_reasons(corpus_dir: Path) -> None:
    settings = load_settings(REPO / "config.example.toml")
    right: Counter[str] = Counter()
    compared: Counter[str] = Counter()
    wrong: list[str] = []
    for path in sorted(corpus_dir.glob("*.eml")):
        truth = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        submission = read_message(path.read_bytes(), settings.call_by_id(truth["call"]).form_spec)
        if truth.get("fields"):
            values = submission.form.values() if submission.form else {}
            for name, expected in truth["fields"].items():
                compared[name] += 1
                if values.get(name) == expected:
                    right[name] += 1
                else:
                    wrong.append(f"{path.name} {name}: {values.get(name)!r} != {expected!r}")
            if submission.form is not None and truth.get("missing"):
                assert list(submission.form.missing) == truth["missing"], path.name
        elif truth.get("reason"):
            got = submission.unreadable.reason if submission.unreadable else submission.status
            if got != truth["reason"]:
                wrong.append(f"{path.name}: {got} != {truth['reason']}")
        elif submission.status != "no_form":
            wrong.append(f"{path.name}: {submission.status} for a message without a form")
    if not compared:
        pytest.fail(f"no truth found in {corpus_dir}")
    for name, count in compared.items():
        assert right[name] / count >= 0.99, (name, [line for line in wrong if f" {name}:" in line])
    assert not wrong, wrong
