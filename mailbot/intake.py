"""Intake: bring new mail from an IMAP folder into the archive and the database.

A message is archived (fsync + rename) and recorded before the folder's cursor moves past it and
before it is moved on the server, so a crash at any point loses nothing; on restart the same UIDs
are read again and recognised by Message-ID or sha256, never processed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from mailbot.config import Settings
from mailbot.config_accounts import MailboxSettings
from mailbot.imap import MailboxClient, MailSummary
from parsers.headers import facts_of, header_block, read_headers
from parsers.model import Envelope
from storage import Storage
from storage.archive import HEAD_BYTES, Archived
from storage.decisions import ArchivedCopy
from storage.intake_records import DeliveryRef, Incoming, Recorded

log = logging.getLogger(__name__)

T = TypeVar("T")
# a batch is also bounded by size, so a run of large attachments never piles up in memory
MAX_BATCH_BYTES = 64 * 1024 * 1024
# above this a message is fetched in pieces straight into the archive
PIECES_ABOVE = 8 * 1024 * 1024


@dataclass
class PollResult:
    mailbox: str
    folder: str
    new: int = 0
    known: int = 0
    uidvalidity_changed: bool = False
    recorded_pks: list[int] = field(default_factory=list)


def call_for(settings: Settings, box: MailboxSettings, recipients: Sequence[str]) -> str:
    """The call a message belongs to: the mailbox's only call, or the one whose address it was sent to.

    When other calls share that address this is only the first of them: the form the message
    carries settles it when the message is read (mailbot.routing).
    """
    if len(box.calls) == 1:
        return box.calls[0]
    wanted = {r.lower() for r in recipients}
    for call_id in box.calls:
        if wanted & {a.lower() for a in settings.call_by_id(call_id).addresses}:
            return call_id
    return box.calls[0]


def batches(summaries: Sequence[MailSummary], count: int, max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 0
    for summary in summaries:
        if batch and (len(batch) >= count or size + summary.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(summary.uid)
        size += summary.size
    if batch:
        yield batch


def _vanished(box: MailboxSettings, folder: str, uid: int) -> None:
    log.warning(
        "UID %d of %s/%s was gone before its body could be fetched (expunged or moved by another client); "
        "the rest of the batch goes on",
        uid,
        box.name,
        folder,
        extra={"mailbox": box.name},
    )


def bodies(
    client: MailboxClient, store: Storage, box: MailboxSettings, uids: Sequence[int], sizes: Mapping[int, int]
) -> Iterator[tuple[int, bytes, datetime, Archived | None]]:
    """(UID, bytes, arrival, archived) of each message still there, in order.

    A large one is written to the archive piece by piece as it arrives, never whole in memory;
    its bytes are then only its first ones (the header section), and ``archived`` says where it is.
    A message another client expunged meanwhile (the server returns nothing for it) is logged and
    left out: it is no longer in the folder, so nothing waits for it.
    """
    whole = {mail.uid: mail for mail in client.fetch([uid for uid in uids if sizes[uid] <= PIECES_ABOVE])}
    for uid in uids:
        mail = whole.get(uid)
        if mail is not None:
            yield uid, mail.raw, mail.internaldate, None
            continue
        found = client.fetch_in_pieces(uid) if sizes[uid] > PIECES_ABOVE else None
        archived = store.archive.put_pieces(found[1]) if found is not None else None
        if found is None or archived is None or archived.size == 0:
            _vanished(box, box.folder, uid)
            continue
        yield uid, archived.head, found[0], archived


def read_as_archived(raw: bytes) -> bool:
    """Whether reading takes the same header section from the archive's head as intake from ``raw``
    (so the envelope intake read can be handed on): all but a header section near 256 KiB long."""
    return len(raw) <= HEAD_BYTES or len(header_block(raw)) + 4 <= HEAD_BYTES


# Told of each new message intake recorded, with what reading needs of its row and the envelope it
# read (None: reading reads it again)
OnRecorded = Callable[[int, ArchivedCopy | None, Envelope | None], None]


def poll_folder(
    settings: Settings,
    box: MailboxSettings,
    client: MailboxClient,
    store: Storage,
    on_recorded: OnRecorded | None = None,
) -> PollResult:
    """Take in the folder's messages above its cursor, a batch at a time.

    A batch (its new messages and its further deliveries of known ones) is recorded in one
    transaction that also moves the cursor to the batch's last UID: every UID at or below it is then
    recorded, known or gone from the server. Nothing of a batch is recorded before all of it is
    fetched, so a drop while fetching leaves the cursor below every UID of the batch.
    """
    folder = box.folder
    state = client.select(folder)
    result = PollResult(box.name, folder)
    uids = client.uids_after(_cursor(store, box, state.uidvalidity, result))
    if not uids:
        return result
    log.info("%d new message(s) in %s/%s", len(uids), box.name, folder, extra={"mailbox": box.name})
    to_move: list[int] = []
    summaries = client.summaries(uids)
    by_uid = {s.uid: s for s in summaries}
    for uid in sorted(set(uids) - set(by_uid)):
        _vanished(box, folder, uid)
    batch_reader = BatchReader(settings, box, client, store, state.uidvalidity, on_recorded)
    for batch in batches(summaries, box.batch_size):
        to_move.extend(batch_reader.take_in([by_uid[uid] for uid in batch], result))
    if box.processed_folder and to_move:
        client.move(to_move, box.processed_folder)
    return result


def _cursor(store: Storage, box: MailboxSettings, uidvalidity: int, result: PollResult) -> int:
    """The last UID taken in from the folder; 0 when the folder is new to us or its UIDVALIDITY changed."""
    known_validity, last_uid = store.intake.cursor(box.name, box.folder)
    if known_validity is not None and known_validity != uidvalidity:
        log.warning(
            "UIDVALIDITY of %s/%s changed from %s to %s: reading the folder again; known messages are matched",
            box.name,
            box.folder,
            known_validity,
            uidvalidity,
            extra={"mailbox": box.name},
        )
        store.intake.reset_cursor(box.name, box.folder, uidvalidity)
        result.uidvalidity_changed = True
        return 0
    if known_validity is None:
        store.intake.reset_cursor(box.name, box.folder, uidvalidity)
    return last_uid


@dataclass
class BatchReader:
    """Records one batch of a folder's messages in one transaction, with the cursor moved past it."""

    settings: Settings
    box: MailboxSettings
    client: MailboxClient
    store: Storage
    uidvalidity: int
    on_recorded: OnRecorded | None

    def where(self, uid: int) -> DeliveryRef:
        return DeliveryRef(self.box.name, self.box.folder, self.uidvalidity, uid)

    def take_in(self, batch: Sequence[MailSummary], result: PollResult) -> list[int]:
        """Record ``batch`` (counted in ``result``); returns the UIDs to move to the processed folder."""
        box, store = self.box, self.store
        known = store.intake.known_message_ids([m for mail in batch if (m := mail.message_id)])
        # the same message again: a second delivery, a copy in another folder, or a re-scan
        again = [(known[m], self.where(mail.uid)) for mail in batch if (m := mail.message_id) in known]
        need_body = {mail.uid: mail.size for mail in batch if mail.message_id not in known}
        incoming: list[Incoming] = []
        envelopes: list[Envelope | None] = []  # as read here, for reading to take on
        for uid, raw, arrival, archived in bodies(self.client, store, box, list(need_body), need_body):
            envelope = read_headers(raw)
            facts = facts_of(envelope)
            call_id = call_for(self.settings, box, facts.recipients)
            incoming.append(Incoming(raw, arrival, call_id, self.where(uid), facts, archived))
            envelopes.append(envelope if read_as_archived(raw) else None)
        cursor_to = self.where(max(mail.uid for mail in batch))
        recorded_batch = store.intake.record_many(incoming, box.name, "imap", known=again, cursor_to=cursor_to)
        result.known += len(again)
        for item, as_read, recorded in zip(incoming, envelopes, recorded_batch, strict=True):
            if recorded.new:
                self._recorded_new(item, recorded, result, as_read)
            else:
                result.known += 1
        return [ref.uid for _, ref in again] + [item.delivery.uid for item in incoming if item.delivery]

    def _recorded_new(self, item: Incoming, recorded: Recorded, result: PollResult, envelope: Envelope | None) -> None:
        message_pk = recorded.message_pk
        message_id = item.facts.message_id if item.facts else None
        result.new += 1
        result.recorded_pks.append(message_pk)
        log.info(
            "recorded %s from %s",
            message_id or "(no Message-ID)",
            self.box.name,
            extra={"message_id": message_id, "mailbox": self.box.name},
        )
        if self.on_recorded is not None:
            self.on_recorded(message_pk, recorded.copy, envelope)
