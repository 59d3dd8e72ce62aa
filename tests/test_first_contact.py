"""What a newcomer meets first, through the real ``mailbot`` command: install name, version, parse,
demo, configuration errors, check warnings, exit codes, quiet logs, progress, dates, the reference."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from mailbot import __version__
from mailbot.config_reference import PAGE, missing_meanings, render_reference
from mailbot.demo import local_config
from mailbot.embedded import SmtpSink
from mailbot.progress import progress_reporter
from tests.conftest import ImapServer

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTION = "grantmail-intake"
SECRET_ENV = "MAILBOT_FIRST_CONTACT_PASSWORD"


def mailbot(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)), **(env or {})}
    environment.pop("MAILBOT_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "mailbot", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def config_file(tmp_path: Path, edit: Any = None) -> Path:
    raw = local_config(tmp_path / "data", ("127.0.0.1", 1), ("127.0.0.1", 1), SECRET_ENV)
    if edit is not None:
        edit(raw)
    path = tmp_path / "mailbot.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- installing


def test_the_distribution_has_a_name_of_its_own_used_everywhere() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"mailbot": "mailbot.cli:main"}  # the command keeps its name
    for name in ("README.md", "tasks.py", ".ci/run", "CHANGELOG.md"):
        text = (REPO / name).read_text(encoding="utf-8")
        assert "mailbot[" not in text, f"{name} installs the unrelated 'mailbot' distribution"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"pip install '{DISTRIBUTION}[postgres]'" in readme
    assert "sudo -u mailbot" in readme and "/etc/mailbot/mailbot.toml" in readme


def test_license_and_changelog_match_the_project() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert f"## {project['version']}" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_version() -> None:
    done = mailbot("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"mailbot {__version__}")


def test_help_documents_the_exit_codes() -> None:
    done = mailbot("--help")
    assert done.returncode == 0
    for code in ("0  done", "1  done in part", "2  the command line", "3  no permission"):
        assert code in done.stdout


def test_the_configuration_reference_is_generated_from_the_settings_models() -> None:
    assert missing_meanings() == [], "every setting says what it is for in docs/configuration-keys.toml"
    assert PAGE.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is out of date: python -m mailbot.config_reference > docs/configuration.md"
    )
    page = render_reference()
    assert "| `password_env` |" in page and "## `[[call.field]]`" in page and '`"Asia/Shanghai"`' in page


# ---------------------------------------------------------------------------------------------- parse


def test_parse_reads_an_eml_for_the_call_it_is_addressed_to(corpus_dir: Path) -> None:
    done = mailbot("parse", str(corpus_dir / "caai-002.eml"))
    assert done.returncode == 0, done.stderr
    assert "caai-ant-2024 form" in done.stdout and "smp-zhipu-2024" not in done.stdout
    assert "宋永刚" in done.stdout
    # nothing from the libraries at the default level
    assert "jieba" not in done.stderr and "alembic" not in done.stderr and "Building prefix" not in done.stderr


def test_parse_on_a_blank_form_lists_its_labels_and_their_fields(shared_dir: Path) -> None:
    done = mailbot(
        "parse", "--call", "smp-zhipu-2024", str(shared_dir / "corpus" / "forms" / "smp-zhipu-2024-申报表.docx")
    )
    assert done.returncode == 1
    assert "no-fields" in done.stdout
    lines = done.stdout.splitlines()
    assert any("申报方向" in line and "-> direction" in line for line in lines), done.stdout
    assert any("研究内容" in line and "(no configured field)" in line for line in lines)
    assert "every configured field has its label in this form" in done.stdout


# ---------------------------------------------------------------------------------------------- configuration


def test_an_unknown_key_suggests_the_nearest_one(tmp_path: Path) -> None:
    def typo(raw: dict[str, Any]) -> None:
        raw["mailbox"][0]["passwrd_env"] = raw["mailbox"][0].pop("password_env")

    done = mailbot("--config", str(config_file(tmp_path, typo)), "status")
    assert done.returncode == 2
    assert "did you mean `password_env`?" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_data_directory_that_is_a_file_is_one_sentence(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    (tmp_path / "data").write_text("not a folder")
    done = mailbot("--config", str(config), "queue", "list")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "data_dir" in line and "is a file, not a folder" in line


def test_check_warns_about_a_call_nobody_reads_and_topics_nobody_listed(tmp_path: Path) -> None:
    def unread_and_topicless(raw: dict[str, Any]) -> None:
        raw["mailbox"] = [box for box in raw["mailbox"] if "caai-ant-2024" not in box["calls"]]
        raw["call"][0]["topic"] = []

    done = mailbot("--config", str(config_file(tmp_path, unread_and_topicless)), "check", env={SECRET_ENV: "x"})
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARN")]
    assert any("caai-ant-2024" in line and "never read" in line for line in warnings), done.stdout
    assert any("smp-zhipu-2024" in line and "topic" in line for line in warnings), done.stdout


# ---------------------------------------------------------------------------------------------- exit codes


def test_run_with_a_missing_secret_stops_with_the_message(tmp_path: Path) -> None:
    done = mailbot("--config", str(config_file(tmp_path)), "run", timeout=60)
    assert done.returncode == 2
    assert f"environment variable {SECRET_ENV} is not set" in done.stderr


def test_status_fails_while_a_mailbox_is_failing(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    once = mailbot("--config", str(config), "run", "--once", env={SECRET_ENV: "x"})
    assert once.returncode == 1  # nothing listens on port 1
    done = mailbot("--config", str(config), "status")
    assert done.returncode == 1
    assert "NOW FAILING" in done.stdout and "failing: smp, caai" in done.stderr


# ---------------------------------------------------------------------------------------------- import, purge


def test_import_progress_is_plain_lines_off_a_terminal_and_purge_takes_a_date(tmp_path: Path, corpus_dir: Path) -> None:
    config = config_file(tmp_path)
    names = ["caai-002", "caai-003", "caai-005"]
    done = mailbot("--config", str(config), "import", "--record-only", *(str(corpus_dir / f"{n}.eml") for n in names))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == ["[1/3", "[2/3", "[3/3"]
    assert all(line.endswith(": recorded") for line in progress)
    assert "alembic" not in done.stderr

    # a date is midnight in the call's zone: a message that arrived at 23:30 Beijing time on the
    # day before counts, one of the next morning does not
    arrivals = sorted(_arrival(corpus_dir, name) for name in names)
    day = arrivals[1].date().isoformat()  # Beijing date of the second arrival
    done = mailbot("--config", str(config), "purge", "--call", "caai-ant-2024", "--before", day, "--dry-run")
    expected = sum(1 for a in arrivals if a.date().isoformat() < day)
    assert done.returncode == 0, done.stderr
    assert f"would remove: {expected} message(s)" in done.stdout
    bad = mailbot("--config", str(config), "purge", "--call", "caai-ant-2024", "--before", "20-05-2024")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr


def _arrival(corpus_dir: Path, name: str) -> datetime:
    return datetime.fromisoformat(json.loads((corpus_dir / f"{name}.json").read_text(encoding="utf-8"))["arrival"])


# ---------------------------------------------------------------------------------------------- demo


@pytest.mark.timeout(600)
def test_the_demo_leaves_its_answers_to_open(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    done = mailbot("demo", "--data-dir", str(folder), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = folder / "answers"
    assert f"Answers:  {answers}" in done.stdout
    emls = sorted(answers.glob("*.eml"))
    htmls = sorted(answers.glob("*.html"))
    sent = int(done.stdout.split(" acknowledgement(s) received")[0].rsplit(", ", 1)[-1])
    assert len(emls) == sent > 5
    assert {p.stem for p in htmls} == {p.stem for p in emls}
    assert any(p.stem.startswith("SMP24-") and p.stem.endswith("-accepted") for p in emls)
    assert "<!DOCTYPE html>" in htmls[0].read_text(encoding="utf-8")


def test_wrong_ports_and_tls_are_explained_in_one_sentence(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink
) -> None:
    def wrong(raw: dict[str, Any]) -> None:
        smp, caai = raw["mailbox"]
        smp.update(host=smtp_sink.host, port=smtp_sink.port, tls="none")  # the SMTP port given as IMAP
        caai.update(host=imap_server.host, port=imap_server.port, tls="ssl", verify_certificate=False)  # TLS on plain
        raw["smtp"] = {"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"}

    done = mailbot("--config", str(config_file(tmp_path, wrong)), "check", env={SECRET_ENV: "x"})
    assert done.returncode == 1
    failing = {line.split(":")[0]: line for line in done.stdout.splitlines() if line.startswith("FAIL")}
    smp = next(line for line in failing.values() if "mailbox smp" in line)
    caai = next(line for line in failing.values() if "mailbox caai" in line)
    assert "answered with an SMTP greeting" in smp and "993" in smp
    assert 'does not speak TLS from the first byte: set tls = "starttls"' in caai


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        with progress_reporter("importing", 3, stream) as advance:
            advance("a.eml", "recorded")
            advance("b.eml", "not imported: no Received: header")
            advance("c.eml", "recorded")
    assert "b.eml: not imported" in terminal.getvalue() and "[1/3]" not in terminal.getvalue()
    assert log.getvalue().splitlines() == [
        "[1/3] a.eml: recorded",
        "[2/3] b.eml: not imported: no Received: header",
        "[3/3] c.eml: recorded",
    ]


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    done = mailbot("status", "--config", str(config), "--log-level=warning")
    assert done.returncode == 0, done.stderr
    assert "nothing has run yet" in done.stdout
