"""Structured logging: readable lines by default, JSON lines with ``--log-format json``.

Every line about a message carries its Message-ID and reference (passed as ``extra``), and
anything that looks like a configured secret is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime

from mailbot.clock import UTC

CONTEXT_FIELDS = ("message_id", "reference", "mailbox", "call")
# C0 and C1 controls: ESC starts an ANSI sequence, and so does the one-character CSI (U+009B)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")
# characters json.dumps(ensure_ascii=False) writes as they are, yet a terminal or a line reader acts on
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def _safe(text: str) -> str:
    """No control characters or ANSI escapes from mail reach a terminal or a log file."""
    return _CONTROL.sub("�", text)


def _one_line(text: str) -> str:
    """A message on its line: a line break inside it (from mail) cannot start a forged entry."""
    return _LINE_BREAK.sub(" ⏎ ", text)


# secrets that appear while the program runs (OAuth2 access tokens, a rotated refresh token): the
# newest ones, which are the ones that can still be used
_LEARNED_SECRETS: deque[str] = deque(maxlen=64)
_LEARNED_LOCK = threading.Lock()


def mask_from_now_on(secret: str) -> None:
    """Mask ``secret`` in every log line from now on, like the configured passwords."""
    with _LEARNED_LOCK:
        if len(secret) >= 4 and secret not in _LEARNED_SECRETS:
            _LEARNED_SECRETS.append(secret)


def _learned_secrets() -> tuple[str, ...]:
    with _LEARNED_LOCK:
        return tuple(_LEARNED_SECRETS)


class SecretMask(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets or _LEARNED_SECRETS:
            record.msg, record.args = self.mask(record.getMessage()), None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True

    def mask(self, text: str) -> str:
        for secret in sorted({*self.secrets, *_learned_secrets()}, key=len, reverse=True):
            text = text.replace(secret, "********")
        return text


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if context:
            line += f"  [{context}]"
        line = _one_line(line)
        if record.exc_text or record.exc_info:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))  # type: ignore[arg-type]
        return _safe(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_text or record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return _JSON_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", json.dumps(entry, ensure_ascii=False))


# Our own loggers speak at the level asked for; libraries' INFO and DEBUG lines (Alembic's
# migrations, jieba's dictionary loading) only with --log-level debug.
OWN_LOGGERS = ("mailbot", "parsers", "storage", "templates", "tests", "benchmarks", "__main__")


class QuietLibraries(logging.Filter):
    """Drops a library's records below WARNING unless the configured level is DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if self.level <= logging.DEBUG or record.levelno >= logging.WARNING:
            return True
        return record.name.split(".", 1)[0] in OWN_LOGGERS


def configure_logging(level: str = "info", fmt: str = "human", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = QuietLibraries(root.level)
    handler.addFilter(quiet)
    for noisy in ("jieba", "pdfminer", "apscheduler.executors.default", "mail.log", "imapclient"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # jieba sets its logger to DEBUG and gives it a handler of its own when it is imported, which
    # may come later than this: a filter on the logger itself holds whatever level it sets
    jieba = logging.getLogger("jieba")
    for old_filter in [f for f in jieba.filters if isinstance(f, QuietLibraries)]:
        jieba.removeFilter(old_filter)
    jieba.addFilter(quiet)


def configured_secrets(env_names: Iterable[str | None]) -> list[str]:
    return [os.environ[name] for name in env_names if name and os.environ.get(name)]
