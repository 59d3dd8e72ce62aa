"""What coordinators open: the exports read back cell by cell, through the real ``mailbot export`` command."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from mailbot import cli
from mailbot.clock import BEIJING
from mailbot.config import load_settings
from mailbot.demo import write_config
from mailbot.embedded import SmtpSink
from mailbot.worker import Worker
from tests.conftest import ImapServer, load_corpus, make_config

INCOMPLETE, REVISED = "smp-041", "smp-044"  # an incomplete form, then the complete revision
ACCEPTED_CAAI = "caai-002"


@pytest.fixture
def exported(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> tuple[Path, dict[str, Any]]:
    truth = load_corpus(imap_server, corpus_dir, [INCOMPLETE, REVISED, ACCEPTED_CAAI])
    config = tmp_path / "mailbot.toml"
    settings = write_config(make_config(tmp_path, imap_server, smtp_sink), config)
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
    return config, truth


def export(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailbot", "--config", str(config), "export", *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())},
    )


def sheet_rows(sheet: Any) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    labels = [cell.value for cell in sheet[1]]
    keys = [cell.value for cell in sheet[2]]
    rows = [dict(zip(keys, [cell.value for cell in row], strict=True)) for row in sheet.iter_rows(min_row=3)]
    return labels, keys, rows


def test_the_workbook_speaks_the_coordinators_language(exported: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    config, truth = exported
    target = tmp_path / "smp.xlsx"
    done = export(config, "--format", "xlsx", "--call", "smp-zhipu-2024", "-o", str(target))
    assert done.returncode == 0, done.stderr
    book = openpyxl.load_workbook(target)
    sheet = book["Applications"]
    labels, keys, rows = sheet_rows(sheet)
    column = dict(zip(keys, labels, strict=True))
    # the call's own form labels first, the English key below
    assert column["project_title"] == "项目名称" and column["applicant_name"] == "申请人姓名"
    assert column["birth"] == "出生年月" and column["direction"] == "申报方向"
    assert column["status"] == "状态" and column["arrival"] == "到达时间（北京时间）"
    (application,) = rows
    # revised into a complete form: the application is complete now
    assert application["status"] == "accepted"
    assert application["current_reference"] != application["reference"]
    revised = truth[REVISED]
    for name, value in revised["fields"].items():
        if value is not None and name not in ("budget", "prior_grant"):
            assert application[name] == value, name
    assert application["missing"] is None or application["missing"] == ""
    # a real date-time cell, in Beijing time
    arrival_cell = sheet.cell(row=3, column=keys.index("arrival") + 1)
    assert isinstance(arrival_cell.value, datetime)
    expected = datetime.fromisoformat(revised["arrival"]).astimezone(BEIJING).replace(tzinfo=None)
    assert arrival_cell.value == expected.replace(microsecond=0)
    assert arrival_cell.number_format == "yyyy-mm-dd hh:mm:ss"
    # frozen header, a filter over the keys' row, columns wide enough for Chinese text
    assert sheet.freeze_panes == "B3"
    assert sheet.auto_filter.ref == f"A2:{openpyxl.utils.get_column_letter(len(keys))}3"
    title_width = sheet.column_dimensions[openpyxl.utils.get_column_letter(keys.index("project_title") + 1)].width
    assert title_width >= min(60, 2 * len(application["project_title"]))

    messages = book["Messages"]
    _labels, message_keys, message_rows = sheet_rows(messages)
    assert "birth" in message_keys and "direction" in message_keys
    assert [row["outcome"] for row in message_rows] == ["incomplete", "revision"]
    assert isinstance(messages.cell(row=3, column=message_keys.index("arrival") + 1).value, datetime)


def test_the_csv_opens_in_excel_with_chinese_intact(exported: tuple[Path, dict[str, Any]]) -> None:
    config, truth = exported
    done = export(config, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(done.stdout.decode("utf-8-sig"))))
    assert len(rows) == 3
    assert (rows[0]["call"], rows[0]["outcome"]) == ("caai-ant-2024", "accepted")
    assert "birth" in rows[0] and "direction" in rows[0]
    names = {row["applicant_name"] for row in rows}
    assert truth[REVISED]["fields"]["applicant_name"] in names


def test_the_json_has_every_field_read(exported: tuple[Path, dict[str, Any]]) -> None:
    config, _truth = exported
    done = export(config, "--format", "json", "--call", "caai-ant-2024")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    settings = load_settings(str(config))
    configured = {spec.name for spec in settings.call_by_id("caai-ant-2024").form_spec.fields}
    assert "direction" in configured
    assert configured <= set(record["fields"])


def test_an_unknown_call_fails(exported: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    config, _truth = exported
    code = cli.main(["--config", str(config), "export", "--call", "smp-2023"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'smp-2023' is not a configured call" in err and "smp-zhipu-2024" in err
