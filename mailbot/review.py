"""The review queue folder: what the bot could not finish, laid out for a person with a file browser.

One folder per message, ``<date>-<reference or short hash>/``, holding ``message.eml``, the
attachments as decoded files under safe names, and ``reason.json``. A folder is assembled under a
temporary name and renamed into place, so an admin never sees half of one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailbot.clock import BEIJING, utcnow
from parsers import Limits, extract_parts
from parsers.sandbox import limit_memory
from storage.archive import FILE_MODE, fsync_dir, make_private_dir, write_atomic
from storage.failpoints import failpoint
from storage.models import Message
from templates import reason_sentence

log = logging.getLogger(__name__)


def item_name(message: Message) -> str:
    day = message.arrival.astimezone(BEIJING).strftime("%Y-%m-%d")
    return f"{day}-{message.reference or message.sha256[:12]}"


# File systems limit a name to 255 bytes, not characters: 180 CJK characters are 540 bytes.
# The margin leaves room for the "-N" that tells apart names that came out the same.
_NAME_BYTES = 200


def _fit(name: str) -> str:
    """``name`` cut (keeping a short extension) to fit a file system's limit on one name."""
    if len(name.encode("utf-8")) <= _NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem and len(extension.encode("utf-8")) <= 16):
        stem, dot, extension = name, "", ""
    room = _NAME_BYTES - len((dot + extension).encode("utf-8"))
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore") + dot + extension


# decoding a message takes several times its size: larger ones are decoded in a child process
IN_PROCESS_BYTES = 4 * 1024 * 1024
EXTRACT_TIMEOUT_S = 120


_WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)


def windows_safe(name: str) -> str:
    """``name`` as Windows can open it from a share: no reserved characters, device names or trailing dots."""
    cleaned = _WINDOWS_FORBIDDEN.sub("_", name).rstrip(" .")
    stem = cleaned.split(".", 1)[0].rstrip(" ")
    if stem.upper() in _WINDOWS_DEVICES:
        cleaned = "_" + cleaned
    return cleaned or "attachment"


def _unique_names(names: list[str]) -> list[str]:
    """Names fit to write, none equal to another (ignoring case, as a reviewer's Windows share would)."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = windows_safe(_fit(name or "attachment"))
        stem, dot, ext = base.rpartition(".")
        if not (dot and stem):
            stem, dot, ext = base, "", ""
        candidate, number = base, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{stem}-{number}{dot}{ext}"
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def write_attachments(raw: bytes, directory: Path, limits: Limits | None) -> list[str]:
    """Decode the attachments of ``raw`` into ``directory`` under safe, distinct names."""
    parts = extract_parts(raw, limits) if raw else []
    names = _unique_names([a.filename for a, _ in parts])
    for (_attachment, data), name in zip(parts, names, strict=True):
        path = directory / name
        path.write_bytes(data)
        path.chmod(FILE_MODE)
    return names


def write_attachments_apart(message_file: Path, directory: Path, limits: Limits | None) -> None:
    """The same in a child process with capped memory: decoding a large message costs several times its size."""
    most = (limits or Limits()).max_message_bytes
    command = [sys.executable, "-m", "mailbot.review", str(message_file), str(directory), str(most)]
    subprocess.run(command, check=True, timeout=EXTRACT_TIMEOUT_S, capture_output=True)


class ReviewQueue:
    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.limits = limits
        self.root = root

    def folder_of(self, message: Message) -> Path:
        return self.root / item_name(message)

    def add(self, message: Message, original: bytes | Path, reason: str, sentence: str, **diagnostics: Any) -> Path:
        """Write (or rewrite) the queue folder of ``message``, with its ``original`` bytes or archive file.

        ``reason`` is the rule that sent it here; the reason code an admin looks up (and the
        sentences) come from ``message.reason`` when the message has one ("corrupt", "scanned" …).
        A file is copied, not read: a message too large to read is not held in memory to queue it.
        """
        code = message.reason or reason
        make_private_dir(self.root)
        target = self.folder_of(message)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            if isinstance(original, Path):
                shutil.copyfile(original, staging / "message.eml")
            else:
                (staging / "message.eml").write_bytes(original)
            files_dir = staging / "attachments"
            files_dir.mkdir(mode=0o700)
            size = (staging / "message.eml").stat().st_size
            if size > IN_PROCESS_BYTES:
                try:
                    write_attachments_apart(staging / "message.eml", files_dir, self.limits)
                except (subprocess.SubprocessError, OSError) as exc:
                    diagnostics["attachments"] = f"not decoded ({exc.__class__.__name__}): they are in message.eml"
            else:
                raw = original if isinstance(original, bytes) else (staging / "message.eml").read_bytes()
                write_attachments(raw, files_dir, self.limits)
            record = {
                "message_id": message.message_id,
                "message_key": message.message_key,
                "reference": message.reference,
                "call": message.call_id,
                "mailbox": message.mailbox,
                "from": message.from_addr,
                "subject": message.subject,
                "arrival": message.arrival.isoformat(),
                "stage": "parse" if code != "internal-error" else "pipeline",
                "reason": code,
                "rule": reason,
                "sentence": sentence or reason_sentence(code, "en"),
                "sentence_zh": reason_sentence(code, "zh"),
                "diagnostics": diagnostics,
                "queued_at": utcnow().isoformat(),
            }
            (staging / "reason.json").write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
            for path in staging.iterdir():
                if path.is_file():
                    path.chmod(FILE_MODE)
            failpoint("review.write")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def mark_closed(self, message: Message, outcome: str, actor: str) -> None:
        """Note in the folder that the item left the queue; the files stay for the record."""
        folder = self.folder_of(message)
        if not folder.exists():
            return
        write_atomic(
            folder / "closed.json",
            json.dumps({"outcome": outcome, "by": actor, "at": utcnow().isoformat()}, ensure_ascii=False).encode(),
        )


def _extract_main(argv: list[str]) -> int:
    """``python -m mailbot.review MESSAGE DIRECTORY MAX_MESSAGE_BYTES``: the child of write_attachments_apart."""
    message_file, directory, most = Path(argv[0]), Path(argv[1]), int(argv[2])
    limit_memory(12 * most // (1024 * 1024))  # the decoded message in several forms, and no more
    write_attachments(message_file.read_bytes(), directory, replace(Limits(), max_message_bytes=most))
    return 0


if __name__ == "__main__":
    sys.exit(_extract_main(sys.argv[1:]))
