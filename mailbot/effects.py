"""Effects: what a committed change does outside the database, as named, re-runnable steps.

A review folder written, an original moved to ``[queue] imap_folder``, an answer filed in Sent,
a purged message's archive file and review folder deleted: each is a row of the ``effects`` table
(``storage/effects.py``), added by the transaction that decided it, so that it happens if and only
if that transaction committed. After the commit a worker runs the step and marks the row done; a
step that fails is logged and tried again later, with growing delays, and never holds up the
decisions behind it. A stop at any moment leaves the row undone, and the next run does the step
again: every step is idempotent (a folder is written whole under a temporary name and renamed, a
copy is looked for before it is filed again, a deletion of what is gone changes nothing).

The stage that adds an effect runs it straight after its commit where it needs nothing slow
(``EffectRunner.run_claimed``, ``mailbot/effect_runner.py``); ``EffectRunner.run_due`` runs the
rest, and whatever a stop or a failure left behind. A new effect is a new ``EffectKind``, a function
that adds it, and its step in ``STEPS`` below.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.imap import MailboxClient
from mailbot.review import item_name
from storage.effects import DueEffect, add_effect, archive_file_in_use, note_filed_in_sent, raw_answers
from storage.models import Message

if TYPE_CHECKING:
    from mailbot.effect_runner import EffectRunner

log = logging.getLogger(__name__)


class EffectKind(StrEnum):
    """The steps, by what each does (a stored string: never renamed once released)."""

    WRITE_REVIEW_FOLDER = "write-review-folder"
    MOVE_ORIGINAL_TO_REVIEW_IMAP_FOLDER = "move-original-to-review-imap-folder"
    MARK_REVIEW_FOLDER_CLOSED = "mark-review-folder-closed"
    FILE_ANSWER_IN_SENT = "file-answer-in-sent"
    DELETE_PURGED_ARCHIVE_FILE = "delete-purged-archive-file"
    DELETE_PURGED_REVIEW_FOLDER = "delete-purged-review-folder"


# What a step reports of each effect it was given, by id: True when it did what the effect asks,
# False when there was nothing left to do, or the error that leaves the effect for a later try.
Outcomes = dict[int, bool | str]


# --- adding effects, in the deciding transaction -------------------------------------------------


def add_review_effects(
    session: Session, settings: Settings, message: Message, worker: str, rule: str, sentence: str, **diagnostics: Any
) -> DueEffect:
    """A message went to review: its folder is to be written (claimed by ``worker``, who writes it
    straight after the commit) and its original moved to ``[queue] imap_folder`` if there is one."""
    now = utcnow()
    known = {box.name for box in settings.mailbox}
    target = settings.queue.imap_folder
    if target and message.message_id and message.mailbox in known:  # imported mail has no server copy
        add_effect(
            session,
            EffectKind.MOVE_ORIGINAL_TO_REVIEW_IMAP_FOLDER,
            now,
            message.id,
            mailbox=message.mailbox,
            message_id=message.message_id,
            target=target,
        )
    return add_effect(
        session,
        EffectKind.WRITE_REVIEW_FOLDER,
        now,
        message.id,
        claimed_by=worker,
        rule=rule,
        sentence=sentence,
        diagnostics=diagnostics,
    )


def add_sent_copy_effects(
    session: Session, settings: Settings, sent: Sequence[tuple[int, str | None, str]], worker: str
) -> list[DueEffect]:
    """Answers were recorded sent (outbox id, mailbox, Message-ID): their copies are to be filed in
    the mailbox's Sent folder by ``worker`` straight after the commit, as a mail client would, so
    the office sees them; none where the provider files them itself, or for no watched mailbox."""
    if settings.smtp.saves_to_sent:
        return []
    known = {box.name for box in settings.mailbox}
    now = utcnow()
    return [
        add_effect(
            session,
            EffectKind.FILE_ANSWER_IN_SENT,
            now,
            outbox_id=outbox_id,
            claimed_by=worker,
            mailbox=mailbox,
            message_id=message_id,
        )
        for outbox_id, mailbox, message_id in sent
        if mailbox in known
    ]


def add_closed_effect(session: Session, message_pk: int, outcome: str, actor: str, worker: str) -> DueEffect:
    """An item left the review queue: its folder is to say so (claimed by ``worker``, who writes it
    straight after the commit)."""
    return add_effect(
        session,
        EffectKind.MARK_REVIEW_FOLDER_CLOSED,
        utcnow(),
        message_pk,
        claimed_by=worker,
        outcome=outcome,
        actor=actor,
    )


def add_purge_effects(session: Session, message: Message, worker: str, delete_archive_file: bool) -> list[DueEffect]:
    """A message was purged: its archive file (unless another message has the same bytes) and its
    review folder are to be deleted by ``worker`` once the purge commits."""
    now = utcnow()
    folder = add_effect(
        session, EffectKind.DELETE_PURGED_REVIEW_FOLDER, now, message.id, claimed_by=worker, folder=item_name(message)
    )
    if not delete_archive_file:
        return [folder]
    archive_file = add_effect(
        session, EffectKind.DELETE_PURGED_ARCHIVE_FILE, now, message.id, claimed_by=worker, sha256=message.sha256
    )
    return [archive_file, folder]


# --- the steps ---------------------------------------------------------------------------------


def write_review_folder(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """Write (or write again) each message's review folder from its archive file."""
    outcomes: Outcomes = {}
    for effect in effects:
        with runner.store.sessions() as session:
            message = session.get(Message, effect.message_pk)
            if message is None or message.purged_at is not None:
                outcomes[effect.id] = False  # purged since: its personal data must not come back
                continue
            session.expunge(message)
        original = runner.store.archive.path_for(message.sha256)
        detail = effect.detail
        runner.review.add(
            message,
            original if original.exists() else b"",
            detail["rule"],
            detail["sentence"],
            **detail.get("diagnostics", {}),
        )
        outcomes[effect.id] = True
    return outcomes


def move_originals_to_review_imap_folder(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """Move the originals of review items to ``[queue] imap_folder``, one connection per mailbox."""
    outcomes: Outcomes = {}
    for mailbox, group in _by_detail(effects, "mailbox").items():
        try:
            box = runner.settings.mailbox_by_name(mailbox)
        except KeyError:
            outcomes.update(dict.fromkeys((e.id for e in group), False))  # no longer watched
            continue
        folders = [f for f in (box.folder, box.processed_folder) if f]
        try:
            with MailboxClient(box, runner.credentials.of(box)) as client:
                for effect in group:
                    message_id, target = effect.detail["message_id"], effect.detail["target"]
                    # an earlier try may have copied it and stopped before the expunge
                    if effect.attempts > 1 and client.contains_message_id(target, message_id):
                        outcomes[effect.id] = False
                    elif client.move_message_id(folders, message_id, target):
                        outcomes[effect.id] = True
                    else:
                        log.info("%s is no longer in %s", message_id, ", ".join(folders), extra={"mailbox": mailbox})
                        outcomes[effect.id] = False
        except Exception as exc:
            error = f"could not move review items to their folder in {mailbox}: {exc}"
            outcomes.update({e.id: error for e in group if e.id not in outcomes})
    return outcomes


def mark_review_folders_closed(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """Note in each folder that its item left the queue, and how (the files stay for the record)."""
    outcomes: Outcomes = {}
    for effect in effects:
        with runner.store.sessions() as session:
            message = session.get(Message, effect.message_pk)
            if message is None or message.purged_at is not None:
                outcomes[effect.id] = False
                continue
            session.expunge(message)
        runner.review.mark_closed(message, effect.detail["outcome"], effect.detail["actor"])
        outcomes[effect.id] = True
    return outcomes


def file_answers_in_sent(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """File copies of sent answers in their mailbox's Sent folder, as a mail client would: one
    MULTIAPPEND per mailbox; a copy an earlier try may have filed is looked for first."""
    outcomes: Outcomes = {}
    folders = runner.sent_folders
    for mailbox, group in _by_detail(effects, "mailbox").items():
        try:
            client = folders.client(mailbox)
            if client is None:
                outcomes.update(dict.fromkeys((e.id for e in group), False))
                continue
            sent = client.box.sent_folder
            with runner.store.sessions() as session:
                ids = [e.outbox_id for e in group]
                raws = raw_answers(session, ids)
            to_file = [
                e
                for e in group
                if raws.get(e.outbox_id)  # purged since: nothing to file
                and not (e.attempts > 1 and client.contains_message_id(sent, e.detail["message_id"]))
            ]
            if to_file:
                client.append_all(sent, [raws[e.outbox_id] for e in to_file], utcnow())
            filed = {e.id for e in to_file}
            outcomes.update({e.id: e.id in filed for e in group})
        except Exception as exc:
            folders.drop(mailbox)
            error = f"could not file {len(group)} answer(s) in Sent of {mailbox}: {exc}"
            outcomes.update({e.id: error for e in group})
    return outcomes


def _note_filed_in_sent(session: Session, effects: Sequence[DueEffect]) -> None:
    note_filed_in_sent(session, [effect.outbox_id for effect in effects])


def delete_purged_archive_files(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """Delete the archive files of purged messages, unless a message not purged has the same bytes."""
    outcomes: Outcomes = {}
    for effect in effects:
        sha256 = effect.detail["sha256"]
        with runner.store.sessions() as session:
            in_use = archive_file_in_use(session, sha256)
        outcomes[effect.id] = not in_use and runner.store.archive.remove(sha256)
    return outcomes


def delete_purged_review_folders(runner: EffectRunner, effects: Sequence[DueEffect]) -> Outcomes:
    """Delete the review folders of purged messages."""
    outcomes: Outcomes = {}
    for effect in effects:
        folder = runner.review.root / effect.detail["folder"]
        outcomes[effect.id] = folder.exists()
        if folder.exists():
            shutil.rmtree(folder)
    return outcomes


@dataclass(frozen=True)
class Step:
    run: Callable[[EffectRunner, Sequence[DueEffect]], Outcomes]
    # what the done transaction records besides the effects, for those the step carried out
    on_done: Callable[[Session, Sequence[DueEffect]], None] | None = None


STEPS: dict[str, Step] = {
    EffectKind.WRITE_REVIEW_FOLDER: Step(write_review_folder),
    EffectKind.MOVE_ORIGINAL_TO_REVIEW_IMAP_FOLDER: Step(move_originals_to_review_imap_folder),
    EffectKind.MARK_REVIEW_FOLDER_CLOSED: Step(mark_review_folders_closed),
    EffectKind.FILE_ANSWER_IN_SENT: Step(file_answers_in_sent, _note_filed_in_sent),
    EffectKind.DELETE_PURGED_ARCHIVE_FILE: Step(delete_purged_archive_files),
    EffectKind.DELETE_PURGED_REVIEW_FOLDER: Step(delete_purged_review_folders),
}


def _by_detail(effects: Sequence[DueEffect], key: str) -> dict[Any, list[DueEffect]]:
    groups: dict[Any, list[DueEffect]] = {}
    for effect in effects:
        groups.setdefault(effect.detail.get(key), []).append(effect)
    return groups
