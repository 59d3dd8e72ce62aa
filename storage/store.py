"""The operations the pipeline performs on the database and the archive.

Every function that changes state takes an open session and leaves committing to the caller, so
a stage can make several changes in one transaction (a decision, its reference number and its
acknowledgement commit together or not at all).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, Update, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.clock import utcnow
from parsers.headers import HeaderFacts, header_facts
from storage.archive import Archived, RawArchive
from storage.db import defer_durability, is_postgres, session_factory, transaction
from storage.failpoints import failpoint
from storage.models import (
    COUNTERS,
    EVENTS,
    MESSAGES,
    OUTBOX,
    Delivery,
    MailboxCursor,
    Message,
    MessageState,
    OutboxMail,
    OutboxState,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryRef:
    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class Recorded:
    message_pk: int
    new: bool


@dataclass(frozen=True)
class Incoming:
    """A message to record: its bytes, when it arrived, its call, and where it was found.

    A message archived while it arrived (``archived``) brings only its first bytes as ``raw``.
    """

    raw: bytes
    arrival: datetime
    call_id: str | None
    delivery: DeliveryRef | None
    facts: HeaderFacts | None = None  # read from ``raw`` when not given
    archived: Archived | None = None

    @property
    def size(self) -> int:
        return self.archived.size if self.archived else len(self.raw)


def message_key_for(message_id: str | None, digest: str) -> str:
    return message_id if message_id else f"sha256:{digest}"


def _oldest_received(limit: int) -> Select[Any]:
    return (
        select(MESSAGES.c.id)
        .where(MESSAGES.c.state == MessageState.RECEIVED)
        .order_by(MESSAGES.c.arrival, MESSAGES.c.id)
        .limit(limit)
    )


class Store:
    def __init__(self, engine: Engine, archive: RawArchive) -> None:
        self.engine = engine
        self.archive = archive
        self.sessions: sessionmaker[Session] = session_factory(engine)

    @property
    def concurrent(self) -> bool:
        """Several workers may share this database (row locks and advisory locks are available)."""
        return is_postgres(self.engine)

    # --- intake -----------------------------------------------------------------------------

    def known_message_ids(self, message_ids: Collection[str]) -> dict[str, int]:
        """The recorded messages among ``message_ids``: Message-ID → primary key."""
        if not message_ids:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(Message.message_key, Message.id).where(Message.message_key.in_(list(message_ids)))
            )
            return {key: pk for key, pk in rows}

    def record(
        self,
        raw: bytes,
        arrival: datetime,
        mailbox: str,
        call_id: str | None,
        source: str,
        delivery: DeliveryRef | None,
    ) -> Recorded:
        """Archive ``raw`` durably, then record it (or a further delivery of it) in one transaction."""
        return self.record_many([Incoming(raw, arrival, call_id, delivery)], mailbox, source)[0]

    def record_many(
        self,
        incoming: Sequence[Incoming],
        mailbox: str,
        source: str,
        known: Sequence[tuple[int, DeliveryRef]] = (),
        cursor_to: DeliveryRef | None = None,
    ) -> list[Recorded]:
        """Archive each message durably, then record them all in one transaction, in order.

        One commit for a fetched batch rather than one per message: should the worker stop before
        it, the folder's cursor has not moved either, and the same UIDs are read again (the
        archive keeps each file once, by content). ``known`` are further deliveries of recorded
        messages (their primary keys), noted in the same transaction.

        The folder's cursor moves only to ``cursor_to``, and only here: the caller vouches that
        every UID of that folder at or below it is recorded by now or by this transaction (or no
        longer on the server). A cursor moved by part of a batch would skip the rest of it for good
        if the worker stopped before the rest was recorded.
        """
        archived = [
            (
                item.archived.digest if item.archived else self.archive.put(item.raw),
                item.facts or header_facts(item.raw),
                item,
            )
            for item in incoming
        ]
        for _attempt in range(2):
            try:
                with transaction(self.sessions) as session:
                    recorded = self._record_archived(session, archived, mailbox, source) if archived else []
                    self._add_deliveries(session, known, utcnow())
                    if cursor_to is not None:
                        self._advance_cursor(session, cursor_to)
                    failpoint("intake.record")
                return recorded
            except IntegrityError:
                # another worker recorded one of them at the same moment: take theirs
                continue
        raise RuntimeError(f"could not record {len(incoming)} message(s) from {mailbox}")

    def _record_archived(
        self,
        session: Session,
        archived: Sequence[tuple[str, HeaderFacts, Incoming]],
        mailbox: str,
        source: str,
    ) -> list[Recorded]:
        now = utcnow()
        keys = [message_key_for(facts.message_id, digest) for digest, facts, _ in archived]
        digests = [digest for digest, _, _ in archived]
        by_key: dict[str, int | Message] = {}
        by_digest: dict[str, int | Message] = {}
        for pk, key, digest in session.execute(
            select(Message.id, Message.message_key, Message.sha256).where(
                Message.message_key.in_(keys) | Message.sha256.in_(digests)
            )
        ):
            by_key[key] = by_digest[digest] = pk
        found: list[tuple[int | Message, bool]] = []
        for key, (digest, facts, item) in zip(keys, archived, strict=True):
            known = by_key.get(key) or by_digest.get(digest)
            if known is not None:
                # recorded before, or earlier in this batch (the same message under two UIDs)
                found.append((known, False))
                continue
            message = Message(
                message_key=key,
                message_id=facts.message_id,
                sha256=digest,
                size=item.size,
                mailbox=mailbox,
                call_id=item.call_id,
                arrival=item.arrival,
                recorded_at=now,
                source=source,
                subject=facts.subject,
                from_addr=facts.from_addr,
                state=MessageState.RECEIVED,
                attempts=0,
            )
            session.add(message)
            by_key[key] = by_digest[digest] = message
            found.append((message, True))
        session.flush()  # the batch's INSERTs, and their keys
        results = [Recorded(entry.id if isinstance(entry, Message) else entry, new) for entry, new in found]
        self._add_deliveries(
            session,
            [(r.message_pk, item.delivery) for r, (_, _, item) in zip(results, archived, strict=True) if item.delivery],
            now,
        )
        return results

    def _add_deliveries(self, session: Session, found: Sequence[tuple[int, DeliveryRef]], now: datetime) -> None:
        """Note where each message was found (once per folder and UID); cursors are moved by the caller."""
        by_folder: dict[tuple[str, str, int], list[tuple[int, DeliveryRef]]] = {}
        for message_pk, ref in found:
            by_folder.setdefault((ref.mailbox, ref.folder, ref.uidvalidity), []).append((message_pk, ref))
        for (mailbox, folder, uidvalidity), entries in by_folder.items():
            known = set(
                session.scalars(
                    select(Delivery.uid).where(
                        Delivery.mailbox == mailbox,
                        Delivery.folder == folder,
                        Delivery.uidvalidity == uidvalidity,
                        Delivery.uid.in_([ref.uid for _, ref in entries]),
                    )
                )
            )
            for message_pk, ref in entries:
                if ref.uid not in known:
                    known.add(ref.uid)
                    session.add(
                        Delivery(
                            message_pk=message_pk,
                            mailbox=mailbox,
                            folder=folder,
                            uidvalidity=uidvalidity,
                            uid=ref.uid,
                            seen_at=now,
                        )
                    )

    def _advance_cursor(self, session: Session, ref: DeliveryRef) -> None:
        cursor = session.get(MailboxCursor, (ref.mailbox, ref.folder))
        if cursor is None:
            session.add(
                MailboxCursor(mailbox=ref.mailbox, folder=ref.folder, uidvalidity=ref.uidvalidity, last_uid=ref.uid)
            )
        elif cursor.uidvalidity == ref.uidvalidity and ref.uid > cursor.last_uid:
            cursor.last_uid = ref.uid

    def cursor(self, mailbox: str, folder: str) -> tuple[int | None, int]:
        with self.sessions() as session:
            cursor = session.get(MailboxCursor, (mailbox, folder))
            return (cursor.uidvalidity, cursor.last_uid) if cursor else (None, 0)

    def reset_cursor(self, mailbox: str, folder: str, uidvalidity: int) -> None:
        """Start a folder over after its UIDVALIDITY changed; known messages are matched, not redone."""
        with transaction(self.sessions) as session:
            cursor = session.get(MailboxCursor, (mailbox, folder))
            if cursor is None:
                session.add(MailboxCursor(mailbox=mailbox, folder=folder, uidvalidity=uidvalidity, last_uid=0))
            else:
                cursor.uidvalidity = uidvalidity
                cursor.last_uid = 0
            failpoint("intake.cursor_reset")

    def note_poll(self, mailbox: str, folder: str, error: str | None) -> None:
        with transaction(self.sessions) as session:
            cursor = session.get(MailboxCursor, (mailbox, folder))
            if cursor is None:
                cursor = MailboxCursor(mailbox=mailbox, folder=folder, last_uid=0)
                session.add(cursor)
            now = utcnow()
            if error is None:
                cursor.last_success = now
                cursor.last_error = None
            else:
                cursor.last_error = error
                cursor.last_error_at = now

    def deliveries_of(self, message_pk: int) -> list[DeliveryRef]:
        with self.sessions() as session:
            rows = session.scalars(select(Delivery).where(Delivery.message_pk == message_pk)).all()
            return [DeliveryRef(r.mailbox, r.folder, r.uidvalidity, r.uid) for r in rows]

    # --- processing queue -------------------------------------------------------------------

    def _claim(self, point: str, pick: Select[Any], mark: Callable[[list[int]], Update]) -> list[int]:
        """Take the rows ``pick`` finds for this worker alone: rows another worker holds are skipped.

        Table statements, not ORM ones: a claim runs for every few messages, and an ORM update
        spends most of its time on keeping a session's objects in step, of which a claim has none.
        Nothing leaves the machine on a claim's commit, so it does not wait for the disk: a lost
        claim only means the row is claimed again (see ``defer_durability``).
        """
        with transaction(self.sessions) as session:
            ids = [int(pk) for pk in session.scalars(pick.with_for_update(skip_locked=True))]
            if ids:
                defer_durability(session)
                session.execute(mark(ids))
                failpoint(point)
            return ids

    def next_received(self, limit: int) -> list[int]:
        """The ``limit`` unprocessed messages next in line (oldest arrival first), unclaimed."""
        with self.sessions() as session:
            return [int(pk) for pk in session.scalars(_oldest_received(limit))]

    def claim_received(self, worker: str, limit: int) -> list[int]:
        """Take up to ``limit`` unprocessed messages, oldest arrival first, for this worker alone."""
        return self._claim(
            "decide.claim",
            _oldest_received(limit),
            lambda ids: (
                update(MESSAGES)
                .where(MESSAGES.c.id.in_(ids), MESSAGES.c.state == MessageState.RECEIVED)
                .values(
                    state=MessageState.PROCESSING,
                    claimed_by=worker,
                    claimed_at=utcnow(),
                    attempts=MESSAGES.c.attempts + 1,
                )
            ),
        )

    def earlier_undecided(self, session: Session, call_id: str, arrival: datetime, message_pk: int) -> bool:
        """Whether a message of ``call_id`` that arrived before this one is not decided yet."""
        earlier = (Message.arrival < arrival) | ((Message.arrival == arrival) & (Message.id < message_pk))
        query = select(Message.id).where(
            Message.call_id == call_id,
            Message.state.in_([MessageState.RECEIVED, MessageState.PROCESSING]),
            earlier,
        )
        return session.scalar(query.limit(1)) is not None

    def unclaim(self, message_pk: int) -> None:
        """Give a claimed message back untouched, to be taken again later (by any worker)."""
        with transaction(self.sessions) as session:
            session.execute(
                update(Message)
                .where(Message.id == message_pk, Message.state == MessageState.PROCESSING)
                .values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None, attempts=Message.attempts - 1)
            )

    def release_stale_claims(self, older_than: timedelta | None) -> int:
        """Give back claims of workers that died; ``None`` releases every claim (single process start)."""
        with transaction(self.sessions) as session:
            query = update(Message).where(Message.state == MessageState.PROCESSING)
            if older_than is not None:
                query = query.where(Message.claimed_at < utcnow() - older_than)
            result = session.execute(query.values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None))
            return int(getattr(result, "rowcount", 0) or 0)

    def release_claims_of(self, worker: str) -> int:
        """Give back the messages ``worker`` claimed and did not decide (its processing round failed)."""
        with transaction(self.sessions) as session:
            result = session.execute(
                update(Message)
                .where(Message.state == MessageState.PROCESSING, Message.claimed_by == worker)
                .values(state=MessageState.RECEIVED, claimed_by=None, claimed_at=None)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def pending_count(self) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.state.in_([MessageState.RECEIVED, MessageState.PROCESSING]))
                )
                or 0
            )

    # --- references, locks, events ----------------------------------------------------------

    def lock_call(self, session: Session, call_id: str) -> None:
        """Serialise decisions within one call across workers (until the transaction ends)."""
        if is_postgres(self.engine):
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"mailbot-call:{call_id}"))))

    def next_reference_number(self, session: Session, call_id: str) -> int:
        """The call's next number, counted up in one statement (its row stays locked until commit)."""
        bump = (
            update(COUNTERS)
            .where(COUNTERS.c.call_id == call_id)
            .values(last_number=COUNTERS.c.last_number + 1)
            .returning(COUNTERS.c.last_number)
        )
        number = session.execute(bump).scalar_one_or_none()
        if number is None:  # the call's first number
            session.execute(insert(COUNTERS), {"call_id": call_id, "last_number": 1})
            return 1
        return int(number)

    def add_event(self, session: Session, kind: str, actor: str, message_pk: int | None = None, **detail: Any) -> None:
        row = {"at": utcnow(), "kind": kind, "actor": actor, "message_pk": message_pk, "detail": detail}
        session.execute(insert(EVENTS), row)

    # --- outbox -----------------------------------------------------------------------------

    def claim_outbox(self, worker: str, limit: int) -> list[int]:
        now = utcnow()
        pick = (
            select(OUTBOX.c.id)
            .where(OUTBOX.c.state == OutboxState.PENDING, OUTBOX.c.next_attempt_at <= now)
            .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
            .limit(limit)
        )
        return self._claim(
            "outbox.claim",
            pick,
            lambda ids: (
                update(OUTBOX)
                .where(OUTBOX.c.id.in_(ids), OUTBOX.c.state == OutboxState.PENDING)
                .values(state=OutboxState.SENDING, sending_since=now, claimed_by=worker, attempts=OUTBOX.c.attempts + 1)
            ),
        )

    def start_conversation(self, outbox_id: int, worker: str) -> bool:
        """Whether ``worker`` still holds this claimed answer; if so, its staleness counts from now.

        A batch is claimed at once and sent one by one: measured from the claim, the last answers
        of a slow batch would look abandoned to another worker, which would send them as well.
        """
        with transaction(self.sessions) as session:
            result = session.execute(
                update(OutboxMail)
                .where(
                    OutboxMail.id == outbox_id,
                    OutboxMail.state == OutboxState.SENDING,
                    OutboxMail.claimed_by == worker,
                )
                .values(sending_since=utcnow())
            )
            return int(getattr(result, "rowcount", 0) or 0) == 1

    def interrupted_sends(self, older_than: timedelta | None) -> list[tuple[int, str]]:
        """(id, state) of outbox rows a worker left mid-conversation: it stopped before the reply."""
        with self.sessions() as session:
            query = select(OutboxMail.id, OutboxMail.state).where(
                OutboxMail.state.in_([OutboxState.SENDING, OutboxState.COMMITTING])
            )
            if older_than is not None:
                query = query.where(OutboxMail.sending_since < utcnow() - older_than)
            return [(row.id, row.state) for row in session.execute(query)]

    def release_outbox_claims_of(self, worker: str, ends_not_sent: Collection[int] = ()) -> int:
        """Give back the answers ``worker`` claimed and never handed the end of over: nobody has them.

        Those are its ``sending`` rows, and the ``committing`` rows in ``ends_not_sent``: marked, or
        possibly marked, just before a failure stopped the end from going out.
        """
        unsent = OutboxMail.state == OutboxState.SENDING
        if ends_not_sent:
            unsent |= (OutboxMail.state == OutboxState.COMMITTING) & OutboxMail.id.in_(list(ends_not_sent))
        with transaction(self.sessions) as session:
            result = session.execute(
                update(OutboxMail)
                .where(unsent, OutboxMail.claimed_by == worker)
                .values(state=OutboxState.PENDING, claimed_by=None, next_attempt_at=utcnow())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def outbox_counts(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state)).all()
            return {state: int(count) for state, count in rows}
