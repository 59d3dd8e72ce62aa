"""``mailbot check``: can it run? The configuration, the folders, the database, the mailboxes and SMTP.

Each line says what was checked and what was found; a warning is a configuration that works but
probably not as meant.
"""

from __future__ import annotations

import os
import smtplib
import tempfile
from dataclasses import dataclass

from mailbot.config import ConfigError, Settings
from mailbot.config_accounts import MailboxSettings, SmtpSettings
from mailbot.imap import MailboxClient, MailboxUnavailable
from mailbot.oauth import Credentials, TokenRefused
from mailbot.smtp import connect_smtp
from storage.db import make_engine, schema_status


@dataclass(frozen=True)
class CheckLine:
    ok: bool
    what: str
    detail: str
    warning: bool = False  # works, but probably not as meant: shown, does not fail the check

    def __str__(self) -> str:
        mark = "WARN" if self.warning else "OK  " if self.ok else "FAIL"
        return f"{mark}  {self.what}: {self.detail}"


def configuration_warnings(settings: Settings) -> list[CheckLine]:
    """What a valid configuration probably did not mean: a call nobody reads, topics nobody can choose."""
    warnings = []
    read = {call_id for box in settings.mailbox for call_id in box.calls}
    for call in settings.call:
        if call.id not in read:
            warnings.append(
                CheckLine(True, f"call {call.id}", "no [[mailbox]] lists it in `calls`: its mail is never read", True)
            )
        topic_fields = [f.name for f in call.form_spec.fields if f.kind == "topic"]
        if topic_fields and not call.topic:
            warnings.append(
                CheckLine(
                    True,
                    f"call {call.id}",
                    f"field {topic_fields[0]!r} is a topic but the call has no [[call.topic]] list to check it against",
                    True,
                )
            )
    return warnings


def _token_note(account: MailboxSettings | SmtpSettings) -> str:
    """How the account's OAuth2 access token is kept current, for a check line."""
    if account.auth != "xoauth2":
        return ""
    if account.oauth is None:
        return (
            f" with the access token in {account.password_env}, which expires (usually within the hour): "
            "give an oauth table for unattended runs"
        )
    return f" with an access token renewed at {account.oauth.endpoint}"


def _check_mailbox(settings: Settings, credentials: Credentials, name: str) -> CheckLine:
    box = settings.mailbox_by_name(name)
    what = f"mailbox {box.name} ({box.user} at {box.host}:{box.port})"
    try:
        credential = credentials.of(box)
    except ConfigError as exc:
        return CheckLine(False, what, f"{exc}; export it before starting mailbot")
    try:
        with MailboxClient(box, credential, timeout_s=30) as client:
            state = client.select(box.folder)
    except MailboxUnavailable as exc:
        return CheckLine(False, what, str(exc))
    except Exception as exc:
        return CheckLine(False, what, f"folder {box.folder!r} cannot be opened: {exc}")
    return CheckLine(True, what, f"logged in{_token_note(box)}; {box.folder} holds {state.exists} message(s)")


def _check_smtp(settings: Settings, credentials: Credentials) -> CheckLine:
    cfg = settings.smtp
    what = f"SMTP {cfg.host}:{cfg.port} ({cfg.tls})"
    logs_in = bool(cfg.user and (cfg.password_env or cfg.oauth))
    try:
        if logs_in:
            credentials.of(cfg)
    except ConfigError as exc:
        return CheckLine(False, what, f"{exc}; export it before starting mailbot")
    try:
        with connect_smtp(settings, timeout_s=30, credentials=credentials) as smtp:
            smtp.noop()
    except TokenRefused as exc:
        return CheckLine(False, what, str(exc))
    except (OSError, smtplib.SMTPException) as exc:
        return CheckLine(False, what, f"cannot connect or log in: {exc.__class__.__name__}: {exc}")
    return CheckLine(True, what, "connected" + (f" and logged in{_token_note(cfg)}" if logs_in else ""))


def _check_database(settings: Settings) -> CheckLine:
    what = "database"
    try:
        engine = make_engine(settings.database_url)
        current, head = schema_status(engine)
        engine.dispose()
    except Exception as exc:
        return CheckLine(False, what, f"cannot open {settings.database_url.split('@')[-1]}: {exc}")
    if current is None:
        # a new installation: `run` creates the schema, so this is no reason not to start
        return CheckLine(
            True, what, f"empty; `mailbot migrate` (or `check --fix`, or the first `mailbot run`) creates schema {head}"
        )
    if current != head:
        return CheckLine(
            False,
            what,
            f"schema at {current}, this version needs {head}: run `mailbot migrate` (or `mailbot check --fix`), "
            "or check you point at the right database",
        )
    return CheckLine(True, what, f"schema {current} is current")


def _check_writable(label: str, path: os.PathLike[str] | str) -> CheckLine:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-"):
            pass
    except OSError as exc:
        return CheckLine(False, label, f"{path} is not writable: {exc.strerror}")
    return CheckLine(True, label, f"{path} is writable")


def run_checks(settings: Settings) -> list[CheckLine]:
    lines = [CheckLine(True, "configuration", f"{len(settings.call)} call(s), {len(settings.mailbox)} mailbox(es)")]
    lines.extend(configuration_warnings(settings))
    lines.append(_check_writable("data directory", settings.data_dir))
    lines.append(_check_writable("archive", settings.archive_dir))
    lines.append(_check_writable("review queue", settings.queue_dir))
    lines.append(_check_database(settings))
    credentials = Credentials(settings)
    lines.extend(_check_mailbox(settings, credentials, box.name) for box in settings.mailbox)
    lines.append(_check_smtp(settings, credentials))
    return lines
