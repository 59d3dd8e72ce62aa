"""The review queue folder: what the bot could not finish, laid out for a person with a file browser.

One folder per message, ``<date>-<reference or short hash>/``, holding ``message.eml``, the
attachments as decoded files under safe names, and ``reason.json``. A folder is assembled under a
temporary name and renamed into place, so an admin never sees half of one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mailbot.clock import BEIJING, utcnow
from parsers import extract_parts
from storage.archive import FILE_MODE, fsync_dir, make_private_dir, write_atomic
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


def _unique_names(names: list[str]) -> list[str]:
    """Names fit to write, none equal to another (ignoring case, as a reviewer's Windows share would)."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = _fit(name or "attachment")
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


class ReviewQueue:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder_of(self, message: Message) -> Path:
        return self.root / item_name(message)

    def add(self, message: Message, raw: bytes, reason: str, sentence: str, **diagnostics: Any) -> Path:
        """Write (or rewrite) the queue folder of ``message``.

        ``reason`` is the rule that sent it here; the reason code an admin looks up (and the
        sentences) come from ``message.reason`` when the message has one ("corrupt", "scanned" …).
        """
        code = message.reason or reason
        make_private_dir(self.root)
        target = self.folder_of(message)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            (staging / "message.eml").write_bytes(raw)
            files_dir = staging / "attachments"
            files_dir.mkdir(mode=0o700)
            parts = extract_parts(raw) if raw else []
            for (_attachment, data), name in zip(parts, _unique_names([a.filename for a, _ in parts]), strict=True):
                path = files_dir / name
                path.write_bytes(data)
                path.chmod(FILE_MODE)
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
