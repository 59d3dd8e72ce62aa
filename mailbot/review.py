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


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = name or "attachment"
        count = seen.get(base.casefold(), 0)
        seen[base.casefold()] = count + 1
        if count:
            stem, dot, ext = base.rpartition(".")
            base = f"{stem}-{count + 1}.{ext}" if dot and stem else f"{base}-{count + 1}"
        out.append(base)
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
