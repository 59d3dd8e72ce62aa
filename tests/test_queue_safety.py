"""``mailbot queue`` as an admin uses it: a readable card, a safe resolve, corrections, who acts, permissions.

Through the real command (``mailbot.cli.main`` or a subprocess) against real servers.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.config import Settings
from mailbot.embedded import SmtpSink
from mailbot.worker import Worker
from storage.models import Application, MessageState
from tests.conftest import PASSWORD_ENV, ImapServer
from tests.test_queue_admin import (
    CORRUPT_CAAI,
    CORRUPT_SMP,
    acks_to,
    cli_run,
    configure,  # noqa: F401 - a fixture
    events_of,
    message_by_id,
    queue_one,
)

TYPED = {
    "project_title": "面向软件工程的大模型代码评测",
    "applicant_name": "沈欣怡",
    "institution": "中国科学院软件研究所",
    "email": "shenx@iscas.ac.cn",
    "topic": "3.2",
}


def field_args(values: dict[str, str]) -> list[str]:
    return [arg for name, value in values.items() for arg in ("--field", f"{name}={value}")]


def body_text(mail: email.message.EmailMessage) -> str:
    return "\n".join(
        part.get_content() for part in mail.walk() if part.get_content_type() in ("text/plain", "text/html")
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_show_is_a_card_for_people_and_json_for_scripts(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, _settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    code, out, _ = cli_run(capsys, config, "queue", "show", queued.reference or "")
    assert code == 0
    assert not out.lstrip().startswith("{")
    assert truth["mail"]["from"] in out
    assert queued.subject in out
    assert "Beijing time" in out and "UTC+08:00" in out
    form_name = truth["form"]["attachment"]
    attachment_line = next(line for line in out.splitlines() if line.strip().startswith(f"- {form_name}"))
    assert "KiB" in attachment_line or "bytes" in attachment_line
    assert "damaged or incomplete" in out  # the reason in words, not only its code
    # the applicant was told which file could not be read, and under which reference
    (told,) = acks_to(smtp_sink, truth["message_id"])
    assert form_name in body_text(told) and str(queued.reference) in str(told["Subject"])
    history = out[out.index("History:") :]
    assert "decided by pipeline" in history

    code, out, _ = cli_run(capsys, config, "queue", "show", queued.reference or "", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["reason"] == "corrupt" and record["from"] == truth["mail"]["from"]
    assert record["attachments"][0]["filename"] == form_name
    assert record["history"][0]["what"] == "decided"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_resolve_shows_first_refuses_missing_fields_and_never_names_the_admin(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    reference = queued.reference or ""
    answers_before = len(acks_to(smtp_sink, truth["message_id"]))

    # only some fields: refused, nothing changes, nobody is mailed
    partial = field_args({"project_title": TYPED["project_title"]})
    code, out, err = cli_run(capsys, config, "queue", "resolve", reference, *partial, "--by", "root")
    assert code == 1
    assert "required field(s) missing" in err and "--allow-missing" in err
    assert "incomplete" in out  # what would have been decided is shown
    # a dry run with everything shows the decision and the answer, and changes nothing
    code, out, _ = cli_run(capsys, config, "queue", "resolve", reference, *field_args(TYPED), "--dry-run")
    assert code == 0
    assert "Decision:  accepted" in out and "acknowledgement (accepted) to" in out and "dry run" in out
    with Worker(settings) as bot:
        assert message_by_id(bot, truth["message_id"]).state == MessageState.REVIEW
    assert len(acks_to(smtp_sink, truth["message_id"])) == answers_before

    code, out, err = cli_run(capsys, config, "queue", "resolve", reference, *field_args(TYPED), "--by", "root", "--yes")
    assert code == 0, err
    assert "accepted" in out
    (answer,) = acks_to(smtp_sink, truth["message_id"])[answers_before:]
    text = body_text(answer)
    assert "root" not in text
    assert "entered by the fund office" in text
    with Worker(settings) as bot:
        assert any(e.kind == "queue-resolved" and e.actor == "root" for e in events_of(bot, queued.id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_resolve_with_missing_fields_only_when_the_admin_says_so(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    partial = field_args({k: TYPED[k] for k in ("project_title", "applicant_name", "email")})
    code, out, _ = cli_run(capsys, config, "queue", "resolve", queued.reference or "", *partial, "--allow-missing")
    assert code == 0 and "incomplete" in out
    with Worker(settings) as bot:
        assert message_by_id(bot, truth["message_id"]).outcome == "incomplete"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_resolved_item_is_corrected_as_a_logged_revision_without_a_second_answer(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    reference = queued.reference or ""
    typed = {k: v for k, v in TYPED.items() if k != "institution"}
    code, _, err = cli_run(capsys, config, "queue", "resolve", reference, *field_args(typed), "--allow-missing")
    assert code == 0, err
    answers = len(acks_to(smtp_sink, truth["message_id"]))

    # resolving again is refused and names the way to correct
    code, _, err = cli_run(capsys, config, "queue", "resolve", reference, "--field", "institution=中科院软件所")
    assert code == 1 and "queue correct" in err

    institution = "中国科学院软件研究所"
    code, out, err = cli_run(
        capsys, config, "queue", "correct", reference, "--field", f"institution={institution}", "--by", "bob"
    )
    assert code == 0, err
    assert "no answer was sent" in out
    assert len(acks_to(smtp_sink, truth["message_id"])) == answers
    with Worker(settings) as bot:
        with bot.store.sessions() as session:
            application = session.scalars(select(Application)).one()
        corrected = [e for e in events_of(bot, queued.id) if e.kind == "queue-corrected"]
    assert application.fields["institution"] == institution
    assert application.fields["project_title"] == TYPED["project_title"]  # the earlier typing is kept
    assert (application.status, application.missing) == ("accepted", [])
    (event,) = corrected
    assert event.actor == "bob" and event.detail["changed"]["institution"] == [None, institution]

    # asked for, the applicant gets one new answer
    code, out, err = cli_run(capsys, config, "queue", "correct", reference, "--field", "topic=3.1", "--answer", "--yes")
    assert code == 0, err
    assert len(acks_to(smtp_sink, truth["message_id"])) == answers + 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_options_are_accepted_after_the_action(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    _truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_CAAI)
    code, _, err = cli_run(
        capsys, config, "queue", "reject", queued.reference or "", "--reason", "spam", "--by", "alice"
    )
    assert code == 0, err
    with Worker(settings) as bot:
        assert any(e.kind == "queue-rejected" and e.actor == "alice" for e in events_of(bot, queued.id))


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user can enter (pytest's own temporary folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="mailbot-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_command_run_as_another_user_says_what_to_do(shared_folder: Path) -> None:
    from mailbot.demo import local_config, write_config

    data_dir = shared_folder / "data"
    config = shared_folder / "mailbot.toml"
    write_config(local_config(data_dir, ("127.0.0.1", 1), ("127.0.0.1", 1), PASSWORD_ENV), config)
    config.chmod(0o644)
    data_dir.mkdir(mode=0o700)
    environment = {**os.environ, PASSWORD_ENV: "x", "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    nobody: int | None = None
    if os.geteuid() == 0:  # an admin logged in as someone else than the service user
        nobody = 65534
    else:  # the same situation for a test that cannot switch users
        data_dir.chmod(0)
    for command in (["queue", "list"], ["export", "--format", "csv"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "mailbot", "--config", str(config), *command],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=False,
            user=nobody,
            group=nobody,
        )
        assert done.returncode == 3, (command, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "run admin commands as the service user" in lines[0] and "sudo -u" in lines[0]
    data_dir.chmod(0o700)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_resolve_asks_on_a_terminal_and_a_no_changes_nothing(
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    configure: Callable[..., tuple[Path, Settings]],  # noqa: F811
) -> None:
    truth, config, settings, queued = queue_one(imap_server, corpus_dir, configure, CORRUPT_SMP)
    answers = len(acks_to(smtp_sink, truth["message_id"]))
    controller, terminal = pty.openpty()
    try:
        command = [sys.executable, "-m", "mailbot", "--config", str(config), "queue", "resolve"]
        process = subprocess.Popen(
            [*command, queued.reference or "", *field_args(TYPED)],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())},
        )
        os.write(controller, b"n\n")
        out, err = process.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 1, err
    assert "Decision:  accepted" in out and "Go ahead? [y/N]" in out and "nothing was changed" in out
    with Worker(settings) as bot:
        assert message_by_id(bot, truth["message_id"]).state == MessageState.REVIEW
    assert len(acks_to(smtp_sink, truth["message_id"])) == answers
