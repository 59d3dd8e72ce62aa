"""What intake records: each message once (archived first), where it was delivered, and how far
each folder has been read.

A message is recorded in the same transaction as the folder's cursor moving past it, so a worker
that stops in between reads the same UIDs again and finds them known, rather than skipping any.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from parsers.headers import HeaderFacts, header_facts
from storage.archive import Archived, RawArchive
from storage.db import transaction, utcnow
from storage.decisions import ArchivedCopy
from storage.failpoints import failpoint
from storage.models import Delivery, MailboxCursor, Message, MessageState


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
    copy: ArchivedCopy | None = None  # of a new message: what reading needs of its row, known here


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


class IntakeRecords:
    """The recorded messages, their deliveries, and each folder's cursor."""

    def __init__(self, sessions: sessionmaker[Session], archive: RawArchive) -> None:
        self.sessions = sessions
        self.archive = archive

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
        written = iter(self.archive.put_all([item.raw for item in incoming if item.archived is None]))
        archived = [
            (
                item.archived.digest if item.archived else next(written),
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
        found: list[tuple[int | Message, ArchivedCopy | None]] = []
        for key, (digest, facts, item) in zip(keys, archived, strict=True):
            known = by_key.get(key) or by_digest.get(digest)
            if known is not None:
                # recorded before, or earlier in this batch (the same message under two UIDs)
                found.append((known, None))
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
            found.append((message, ArchivedCopy(item.call_id, digest, item.size)))
        session.flush()  # the batch's INSERTs, and their keys
        results = [
            Recorded(entry.id if isinstance(entry, Message) else entry, copy is not None, copy) for entry, copy in found
        ]
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
