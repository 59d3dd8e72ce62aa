"""``mailbot demo``: the whole pipeline on sample mail, with embedded IMAP and SMTP servers.

It starts pymap and an SMTP sink on free loopback ports, delivers generated submissions for every
configured call with their arrival times, runs one pass of the bot against them, and prints what
happened to each message and where the data lives.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import imapclient
import tomli_w

from mailbot.clock import BEIJING
from mailbot.config import Settings, example_config_text, parse_settings
from mailbot.embedded import EmbeddedImapServer, SmtpSink
from mailbot.samples import demo_samples
from mailbot.worker import Worker
from storage.models import Message

DEMO_PASSWORD = "demo-password"  # noqa: S105 - a throw-away account on a loopback-only server
MARKER = ".mailbot-demo"


def local_config(
    data_dir: Path,
    imap_address: tuple[str, int],
    smtp_address: tuple[str, int],
    password_env: str,
    database_url: str | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """The example configuration pointed at servers on this machine (demo, tests, benchmarks)."""
    raw: dict[str, Any] = tomllib.loads(example_config_text())
    for box in raw["mailbox"]:
        box.update(host=imap_address[0], port=imap_address[1], tls="none", password_env=password_env, idle=False)
    raw["smtp"] = {"host": smtp_address[0], "port": smtp_address[1], "tls": "none"}
    raw["storage"] = {
        "url": database_url or f"sqlite:///{data_dir / 'mailbot.db'}",
        "data_dir": str(data_dir),
    }
    raw["processing"]["workers"] = 2
    for name, values in sections.items():
        if isinstance(raw.get(name), list):
            for item in raw[name]:
                item.update(values)
        else:
            raw.setdefault(name, {}).update(values)
    return raw


def write_config(raw: dict[str, Any], path: Path) -> Settings:
    """Check ``raw`` and write it as TOML to ``path``, for the commands an operator runs next."""
    settings = parse_settings(raw, str(path))
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    path.chmod(0o600)
    return settings


def _prepare(data_dir: Path) -> None:
    if data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise SystemExit(f"{data_dir} exists and was not made by the demo: choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / MARKER).write_text("made by mailbot demo; removed by the next demo run\n")


def _subject(raw: bytes) -> str:
    value = message_from_bytes(raw).get("Subject", "")
    return str(make_header(decode_header(value)))


def run_demo(data_dir: Path) -> int:
    data_dir = data_dir.resolve()
    _prepare(data_dir)
    os.environ["MAILBOT_DEMO_PASSWORD"] = DEMO_PASSWORD
    base = parse_settings(tomllib.loads(example_config_text()), "the example configuration")
    users = {box.user: DEMO_PASSWORD for box in base.mailbox}
    with EmbeddedImapServer(users) as imap, SmtpSink() as smtp:
        raw = local_config(data_dir, (imap.host, imap.port), (smtp.host, smtp.port), "MAILBOT_DEMO_PASSWORD")
        settings = write_config(raw, data_dir / "mailbot.toml")
        samples = demo_samples(list(settings.call))
        boxes = {call_id: box for box in settings.mailbox for call_id in box.calls}
        for sample in samples:
            box = boxes[sample.call_id]
            client = imapclient.IMAPClient(imap.host, port=imap.port, ssl=False)
            client.login(box.user, DEMO_PASSWORD)
            client.append(box.folder, sample.raw, msg_time=sample.arrival)
            client.logout()
        print(f"Delivered {len(samples)} sample messages to the embedded IMAP server on port {imap.port}.\n")
        with Worker(settings) as worker:
            summary = worker.single_pass()
            with worker.store.sessions() as session:
                messages = {m.message_key: m for m in session.query(Message).all()}
        sent = {message_from_bytes(m.raw).get("In-Reply-To", ""): m for m in smtp.received}
        _print_table(samples, messages, sent)
        answers_dir = write_answers(data_dir / "answers", [m.raw for m in smtp.received], messages)
        print(
            f"\n{len(summary.processed)} processed, {len(smtp.received)} acknowledgement(s) received by the "
            f"SMTP sink, errors: {len(summary.errors)}"
        )
        for error in summary.errors:
            print(f"  error: {error}")
    print(f"\nDatabase: {settings.database_url}")
    print(f"Archive:  {settings.archive_dir}")
    print(f"Queue:    {settings.queue_dir}  (what a person must look at)")
    print(f"Config:   {data_dir / 'mailbot.toml'}")
    print(f"Answers:  {answers_dir}  (each acknowledgement as .eml for a mail client and .html for a browser)")
    command = Path(sys.executable).parent / "mailbot"
    print(f"Try:      {command} --config {data_dir / 'mailbot.toml'} export --format csv")
    return 1 if summary.errors else 0


def write_answers(folder: Path, sent: list[bytes], messages: dict[str, Message]) -> Path:
    """Each answer the SMTP sink received as ``<reference>-<outcome>.eml`` and its HTML part as ``.html``."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for number, raw in enumerate(sent, start=1):
        mail = message_from_bytes(raw, policy=policy.default)
        original = messages.get(str(mail.get("In-Reply-To", "")))
        stem = (
            "-".join(
                part
                for part in (original.reference if original else None, original.outcome if original else None)
                if part
            )
            or f"answer-{number}"
        )
        (folder / f"{stem}.eml").write_bytes(raw)
        html = mail.get_body(("html",)) if isinstance(mail, EmailMessage) else None
        if html is not None:
            (folder / f"{stem}.html").write_text(str(html.get_content()), encoding="utf-8")
    return folder


def _print_table(samples: list[Any], messages: dict[str, Message], sent: dict[str, Any]) -> None:
    header = f"{'arrival (Beijing)':<17}  {'call':<15}  {'expected':<38}  {'outcome':<15}  {'ref':<11}  acknowledgement"
    print(header)
    print("-" * len(header))
    for sample in samples:
        message_id = message_from_bytes(sample.raw).get("Message-ID", "")
        message = messages.get(message_id)
        ack = sent.get(message_id)
        print(
            f"{sample.arrival.astimezone(BEIJING):%Y-%m-%d %H:%M}  {sample.call_id:<15}  {sample.story:<38}  "
            f"{(message.outcome if message else 'not recorded') or '-':<15}  "
            f"{(message.reference if message else '') or '-':<11}  {_subject(ack.raw) if ack else '(none)'}"
        )
