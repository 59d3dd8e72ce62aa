"""Named failpoints: places in the durable paths where a test can stop the process on purpose.

In the spirit of FreeBSD's fail(9), TiKV's fail-rs and etcd's gofail, reduced to what the crash
tests need. Each effect boundary of intake, deciding and sending calls ``failpoint("name")`` just
before the effect (a commit, an IMAP or SMTP command, an archive or review-folder write). Unless
``MAILBOT_FAILPOINTS`` is set when the process starts, that call is a check of one module-level
``None`` and nothing else: production pays nothing.

``MAILBOT_FAILPOINTS="outbox.sent=2:kill;imap.fetch=1:raise"`` arms points: at the Nth time the
process reaches a point, ``kill`` sends SIGKILL to the process itself (a crash: nothing is
flushed, no ``finally`` runs) and ``raise`` raises ``FailpointHit``; ``call``, for tests in one
process, calls the function given to ``configure`` (to cut a connection just before a command).
``MAILBOT_FAILPOINT_HITS=FILE`` appends the name of every point reached to FILE, so a test can
see which points a run passes and how often.

It lives in ``storage/`` because storage (commits, archive writes) has points too and must not
import ``mailbot/``; every layer can import storage.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV_ARM = "MAILBOT_FAILPOINTS"
ENV_HITS = "MAILBOT_FAILPOINT_HITS"
ACTIONS = ("kill", "raise", "call")

# Every point, by path. A crash test enumerates these; a test checks each is reached, so none rots.
INTAKE_POINTS = (
    "imap.select",  # SELECT of a watched folder
    "imap.search",  # UID SEARCH for UIDs above the cursor
    "imap.fetch.summaries",  # UID FETCH of sizes and Message-IDs
    "imap.fetch.bodies",  # UID FETCH of whole messages
    "imap.fetch.piece",  # each partial UID FETCH of a large message
    "archive.write",  # a new archive file, before its bytes are written
    "archive.rename",  # a written and synced archive file, before it is renamed into place
    "intake.cursor_reset",  # commit: a folder's cursor started (over)
    "intake.record",  # commit: a batch's messages, deliveries and cursor
    "imap.move",  # UID MOVE to the processed or review folder
    "imap.copy",  # UID COPY there, where the server has no MOVE
    "imap.expunge",  # UID EXPUNGE (or EXPUNGE) after that COPY
)
DECIDE_POINTS = (
    "decide.claim",  # commit: messages claimed for deciding
    "review.write",  # a review folder, before it is renamed into place (an effect of the decision)
    "decide.commit",  # commit: decision, reference number and acknowledgement
    "review.commit",  # commit: a message whose processing failed goes to review
    "imap.search.message_id",  # UID SEARCH by Message-ID (review folder, Sent folder)
)
SEND_POINTS = (
    "outbox.claim",  # commit: answers claimed for sending (state ``sending``)
    "smtp.mail",  # MAIL FROM
    "smtp.rcpt",  # RCPT TO (each recipient)
    "smtp.data",  # DATA and the message's lines
    "outbox.committing",  # commit: the hand-over mark, just before the final line
    "smtp.final",  # the final "." line: from here the server may keep the message
    "imap.append",  # APPEND of our copies to the Sent folder (an effect of recording them sent)
    "outbox.sent",  # commit: the server's replies of a batch
    "outbox.finish",  # commit: an answer retried later, failed for good, or found in Sent
    "outbox.recover",  # commit: the verdict on an answer a stopped worker left mid-conversation
    "digest.insert",  # commit: a call's digest of a day and its outbox row
)
EFFECT_POINTS = (
    "effect.claim",  # commit: due effects claimed by a worker
    "effect.step",  # an effect's step (a folder written or deleted, mail moved or filed), before it runs
    "effect.done",  # commit: a step that ran marked done
)
REGISTRY = frozenset(INTAKE_POINTS + DECIDE_POINTS + SEND_POINTS + EFFECT_POINTS)
# reached only off the clean path: when a stage fails, an answer is refused, or after a crash
OFF_THE_CLEAN_PATH = frozenset({"review.commit", "outbox.finish", "outbox.recover"})


class FailpointHit(Exception):
    """Raised at an armed point whose action is ``raise``."""


@dataclass(frozen=True)
class Trigger:
    hit: int
    action: str


class _Armed:
    def __init__(
        self, triggers: dict[str, Trigger], hits_file: Path | None, on_call: Callable[[str], object] | None
    ) -> None:
        self.triggers = triggers
        self.hits_file = hits_file
        self.on_call = on_call
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def reach(self, name: str) -> None:
        if name not in REGISTRY:
            raise ValueError(f"failpoint {name!r} is not in the registry")
        with self.lock:
            self.counts[name] += 1
            count = self.counts[name]
            if self.hits_file is not None:
                with self.hits_file.open("a", encoding="utf-8") as handle:
                    handle.write(name + "\n")
        trigger = self.triggers.get(name)
        if trigger is None or trigger.hit != count:
            return
        if trigger.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if trigger.action == "call" and self.on_call is not None:
            self.on_call(name)
            return
        raise FailpointHit(f"failpoint {name} at hit {count}")


def parse(spec: str) -> dict[str, Trigger]:
    """``name=N:action;…`` → triggers; a wrong name or action is an error, not a silent no-op."""
    triggers: dict[str, Trigger] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, rest = part.partition("=")
        hit, _, action = rest.partition(":")
        if name not in REGISTRY:
            raise ValueError(f"{ENV_ARM}: unknown failpoint {name!r}")
        if action not in ACTIONS or not hit.isdigit() or int(hit) < 1:
            raise ValueError(f"{ENV_ARM}: {part!r} is not NAME=HIT:{'|'.join(ACTIONS)}")
        triggers[name] = Trigger(int(hit), action)
    return triggers


_armed: _Armed | None = None


def configure(spec: str | None, hits_file: Path | None = None, on_call: Callable[[str], object] | None = None) -> None:
    """Arm the points of ``spec`` in this process (None and no ``hits_file``: disarm all)."""
    global _armed
    _armed = _Armed(parse(spec or ""), hits_file, on_call) if spec or hits_file else None


def failpoint(name: str) -> None:
    """Reach the point ``name``: nothing at all unless points were armed."""
    if _armed is not None:
        _armed.reach(name)


def hits(path: Path) -> Counter[str]:
    """How often each point was reached, from a ``MAILBOT_FAILPOINT_HITS`` file."""
    if not path.exists():
        return Counter()
    return Counter(line for line in path.read_text(encoding="utf-8").splitlines() if line)


configure(os.environ.get(ENV_ARM), Path(os.environ[ENV_HITS]) if os.environ.get(ENV_HITS) else None)
