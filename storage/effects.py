"""The queue of effects: steps outside the database that a committed change implies.

A transaction that decides something adds the effect rows it implies (``add_effect``); after its
commit a worker claims due rows (``claim_effects``), runs each step and marks it done in a
transaction of its own (``mark_done``), or schedules it again (``schedule_retry``). What each kind
of step does lives in ``mailbot/effects.py``; this module holds only the statements, those of the
queue and the few the steps read and write (``raw_answers``, ``note_filed_in_sent``,
``archive_file_in_use``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.failpoints import failpoint
from storage.models import EFFECTS, MESSAGES, OUTBOX

_INSERT = insert(EFFECTS).returning(EFFECTS.c.id)


@dataclass(frozen=True)
class DueEffect:
    """An effect this worker claimed, with what its step needs."""

    id: int
    kind: str
    message_pk: int | None
    outbox_id: int | None
    detail: dict[str, Any]
    attempts: int  # this one included: above 1, an earlier try may have done some of the step


class UnrecordedEffects:
    """Effects this process claimed and ran, or began to, but whose outcome it could not record.

    The database went away between the step and its record: the rows still say claimed by this
    worker, so on a database several workers share nobody else takes them up before the claim
    expires. Any runner of the process that opens this store runs them again at its next round
    (steps are idempotent and are told an earlier try may have done the work). Kept per store, not
    per process: two stores in one process (tests, an admin command beside a worker) never run
    each other's effects.
    """

    def __init__(self) -> None:
        self._effects: list[DueEffect] = []
        self._lock = threading.Lock()
        self.on_hold: Callable[[], None] | None = None  # the worker wakes its effects runner

    def hold(self, effects: Sequence[DueEffect]) -> None:
        with self._lock:
            self._effects.extend(replace(effect, attempts=effect.attempts + 1) for effect in effects)
        if self.on_hold is not None:
            self.on_hold()

    def take(self) -> list[DueEffect]:
        with self._lock:
            taken, self._effects = self._effects, []
        return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._effects)


def add_effect(
    session: Session,
    kind: str,
    now: datetime,
    message_pk: int | None = None,
    outbox_id: int | None = None,
    claimed_by: str | None = None,
    **detail: Any,
) -> DueEffect:
    """Add an effect in the caller's transaction, due at once.

    ``claimed_by``: the worker that will run it straight after the commit, without a claim of its own.
    """
    attempts = 0 if claimed_by is None else 1
    row = {
        "kind": kind,
        "message_pk": message_pk,
        "outbox_id": outbox_id,
        "detail": detail,
        "created_at": now,
        "due_at": now,
        "attempts": attempts,
        "claimed_by": claimed_by,
        "claimed_at": None if claimed_by is None else now,
    }
    effect_id = int(session.execute(_INSERT, row).scalar_one())
    return DueEffect(effect_id, kind, message_pk, outbox_id, detail, attempts)


def claim_effects(
    sessions: sessionmaker[Session],
    worker: str,
    now: datetime,
    abandoned_before: datetime,
    limit: int = 100,
    sole_worker: bool = False,
) -> list[DueEffect]:
    """Claim up to ``limit`` due effects for ``worker``, oldest first.

    A claim older than ``abandoned_before`` belongs to a worker taken for dead, and is taken over;
    so is any claim of another worker where ``worker`` is the only one the database has (SQLite:
    the others are stopped runs). Steps are idempotent, so running one again after a stop is safe;
    the claims of this worker's other threads are theirs to finish.
    """
    free = [EFFECTS.c.claimed_by.is_(None), EFFECTS.c.claimed_at < abandoned_before]
    if sole_worker:
        free.append(EFFECTS.c.claimed_by != worker)
    due = (
        select(EFFECTS)
        .where(
            EFFECTS.c.done_at.is_(None),
            EFFECTS.c.due_at <= now,
            or_(*free),
        )
        .order_by(EFFECTS.c.id)
        .limit(limit)
    )
    with transaction(sessions) as session:
        rows = list(session.execute(due.with_for_update(skip_locked=True)))
        if not rows:
            return []
        session.execute(
            update(EFFECTS)
            .where(EFFECTS.c.id.in_([row.id for row in rows]))
            .values(claimed_by=worker, claimed_at=now, attempts=EFFECTS.c.attempts + 1)
        )
        failpoint("effect.claim")
    return [
        DueEffect(row.id, row.kind, row.message_pk, row.outbox_id, dict(row.detail or {}), row.attempts + 1)
        for row in rows
    ]


def mark_done(session: Session, effect_ids: Sequence[int], now: datetime) -> None:
    """Record, in the caller's transaction, that the steps of ``effect_ids`` ran to their end."""
    session.execute(
        update(EFFECTS)
        .where(EFFECTS.c.id.in_(effect_ids))
        .values(done_at=now, claimed_by=None, claimed_at=None, last_error=None)
    )


def schedule_retry(sessions: sessionmaker[Session], effect_id: int, error: str, due_at: datetime) -> None:
    """Give a failed step back, to be tried again at ``due_at``."""
    with transaction(sessions) as session:
        session.execute(
            update(EFFECTS)
            .where(EFFECTS.c.id == effect_id)
            .values(due_at=due_at, claimed_by=None, claimed_at=None, last_error=error[:2000])
        )


def release_claims(sessions: sessionmaker[Session], worker: str) -> int:
    """Give back every effect ``worker`` claimed and did not finish: for a worker whose runners have
    all stopped, so that another worker need not wait for the claims to expire. Returns how many."""
    with transaction(sessions) as session:
        released = session.execute(
            update(EFFECTS)
            .where(EFFECTS.c.claimed_by == worker, EFFECTS.c.done_at.is_(None))
            .values(claimed_by=None, claimed_at=None)
        )
    return int(getattr(released, "rowcount", 0) or 0)


def forget_effects_of(session: Session, message_pks: list[int], now: datetime) -> None:
    """Purge: the effects of these messages keep no detail (it may name a person or a file) and,
    with nothing of the message left to act on, count as done."""
    session.execute(
        update(EFFECTS)
        .where(EFFECTS.c.message_pk.in_(message_pks))
        .values(detail={}, last_error=None, done_at=func.coalesce(EFFECTS.c.done_at, now), claimed_by=None)
    )


def undone_effects(session: Session) -> list[tuple[int, str, int, str | None]]:
    """Every effect not done yet: id, kind, attempts and the last error."""
    rows = session.execute(
        select(EFFECTS.c.id, EFFECTS.c.kind, EFFECTS.c.attempts, EFFECTS.c.last_error)
        .where(EFFECTS.c.done_at.is_(None))
        .order_by(EFFECTS.c.id)
    )
    return [(row.id, row.kind, row.attempts, row.last_error) for row in rows]


# --- what the steps read and write --------------------------------------------------------------


def raw_answers(session: Session, outbox_ids: Sequence[int | None]) -> dict[int | None, bytes]:
    """The mail of each of these answers as it was sent, by outbox id (empty once purged; an id
    with no row, or None, is not in the result)."""
    return dict(session.execute(select(OUTBOX.c.id, OUTBOX.c.raw).where(OUTBOX.c.id.in_(outbox_ids))).all())


def note_filed_in_sent(session: Session, outbox_ids: Sequence[int | None]) -> None:
    """Record, in the caller's transaction, that a copy of each of these answers is in its mailbox's Sent folder."""
    session.execute(update(OUTBOX).where(OUTBOX.c.id.in_(outbox_ids)).values(filed_in_sent=True))


def archive_file_in_use(session: Session, sha256: str) -> bool:
    """Whether a message not purged has the archive file ``sha256`` (so the file must stay)."""
    kept = session.execute(
        select(MESSAGES.c.id).where(MESSAGES.c.sha256 == sha256, MESSAGES.c.purged_at.is_(None)).limit(1)
    ).first()
    return kept is not None
