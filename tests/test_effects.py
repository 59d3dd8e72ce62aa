"""Effects after the commit: a failing step undoes no decision and is tried again; a step run again
after it was done (as after a stop between the step and its done mark) changes nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailbot.clock import utcnow
from mailbot.effects import EffectKind
from mailbot.embedded import SmtpSink
from mailbot.review import ReviewQueue
from mailbot.worker import Worker
from storage.effects import undone_effects
from storage.models import EFFECTS, Message, MessageState, OutboxMail
from tests.conftest import ImapServer, load_corpus, make_settings

SMP_BOX = "min.gao@aminer.cn"
REVIEW_FOLDER = "Intake/Needs review"


def test_a_review_folder_that_cannot_be_written_leaves_the_decision_standing_and_is_written_later(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_corpus(imap_server, corpus_dir, ["smp-001", "smp-047"])  # accepted, corrupt
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        with monkeypatch.context() as patch:

            def disk_full(*_args: object, **_kwargs: object) -> Path:
                raise OSError(28, "No space left on device")

            patch.setattr(ReviewQueue, "add", disk_full)
            summary = bot.single_pass()
        assert summary.errors == [] and len(summary.processed) == 2
        with bot.store.sessions() as session:
            states = {m.state for m in session.scalars(select(Message))}
            (undone,) = undone_effects(session)
        assert states == {MessageState.DONE, MessageState.REVIEW}, "the decision stands"
        assert undone[1] == EffectKind.WRITE_REVIEW_FOLDER and "No space left" in str(undone[3])
        assert not settings.queue_dir.exists() or not any(settings.queue_dir.iterdir())

        assert bot.pipeline.decider.effects.run_due() == 0, "not due again straight away"
        with bot.store.sessions() as session, session.begin():
            session.execute(update(EFFECTS).values(due_at=utcnow()))  # as if the delay had passed
        assert bot.pipeline.decider.effects.run_due() == 1
        with bot.store.sessions() as session:
            assert undone_effects(session) == []
    (folder,) = settings.queue_dir.iterdir()
    assert (folder / "message.eml").is_file() and (folder / "reason.json").is_file()


def test_steps_run_again_after_they_were_done_change_nothing_more(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    truth = load_corpus(imap_server, corpus_dir, ["smp-001", "smp-002", "smp-047"])
    settings = make_settings(tmp_path, imap_server, smtp_sink, queue={"imap_folder": REVIEW_FOLDER})
    with Worker(settings) as bot:
        bot.single_pass()
        with bot.store.sessions() as session:
            assert undone_effects(session) == []
            kinds = sorted(session.scalars(select(EFFECTS.c.kind)))
            filed = sorted(session.scalars(select(OutboxMail.message_id).where(OutboxMail.filed_in_sent)))
        assert kinds.count(EffectKind.FILE_ANSWER_IN_SENT) == 3
        assert kinds.count(EffectKind.WRITE_REVIEW_FOLDER) == kinds.count(
            EffectKind.MOVE_ORIGINAL_TO_REVIEW_IMAP_FOLDER
        )
        folders = sorted(path.name for path in settings.queue_dir.iterdir())
        # a stop after each step and before its done mark: every step runs a second time
        with bot.store.sessions() as session, session.begin():
            session.execute(update(EFFECTS).values(done_at=None, attempts=1, claimed_by=None, due_at=utcnow()))
        assert bot.pipeline.decider.effects.run_due() == len(kinds)
        with bot.store.sessions() as session:
            assert undone_effects(session) == []
    assert sorted(imap_server.message_ids(SMP_BOX, "Sent")) == filed, "no second copy in Sent"
    assert sorted(imap_server.message_ids(SMP_BOX, REVIEW_FOLDER)) == [truth["smp-047"]["message_id"]]
    assert sorted(path.name for path in settings.queue_dir.iterdir()) == folders


def test_a_step_that_fails_once_is_done_by_the_same_pass(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing cause (a reset connection, a full disk freed) must not leave the effect for a later run."""
    load_corpus(imap_server, corpus_dir, ["smp-047"])  # corrupt: goes to review
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    write = ReviewQueue.add
    failures: list[str] = []

    def fails_the_first_time(queue: ReviewQueue, *args: object, **kwargs: object) -> Path:
        if not failures:
            failures.append("disk full")
            raise OSError(28, "No space left on device")
        return write(queue, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ReviewQueue, "add", fails_the_first_time)
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
        with bot.store.sessions() as session:
            assert undone_effects(session) == [], "tried again by the follow-up stage of the same pass"
    assert failures == ["disk full"]
    (folder,) = settings.queue_dir.iterdir()
    assert (folder / "reason.json").is_file()
