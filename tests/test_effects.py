"""Effects after the commit: a failing step undoes no decision and is tried again; a step run again
after it was done (as after a stop between the step and its done mark) changes nothing more."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import storage.effects
from mailbot import effect_runner
from mailbot.clock import utcnow
from mailbot.config import Settings
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


def run_with_records_failing(
    settings: Settings, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, failing: int, until: str
) -> list[tuple[int, str, int, str | None]]:
    """``run`` until the answers are out and the first ``failing`` records of a step's outcome have
    failed as a dropped database connection makes them fail, then until ``until``: "recorded" (every
    effect done; the worker is stopped after) or "stopped" (stopped at once). Returns what is undone."""
    tries: list[int] = []
    record = storage.effects.mark_done

    def connection_dropped(session: Session, effect_ids: Sequence[int], now: datetime) -> None:
        tries.append(len(effect_ids))
        if len(tries) <= failing:
            raise OperationalError("UPDATE effects", {}, ConnectionResetError("connection reset by peer"))
        record(session, effect_ids, now)

    monkeypatch.setattr(effect_runner, "mark_done", connection_dropped)
    with Worker(settings) as bot:

        def undone() -> list[tuple[int, str, int, str | None]]:
            with bot.store.sessions() as session:
                return undone_effects(session)

        loop = threading.Thread(target=bot.run_until_stopped, name="run-forever", daemon=True)
        loop.start()
        try:
            deadline = time.monotonic() + 20  # well inside the effects runner's interval of 60 s
            while not (smtp_sink.received and len(tries) >= failing and (until == "stopped" or not undone())):
                assert time.monotonic() < deadline, f"{until} in time: {len(tries)} record(s) tried, {undone()}"
                time.sleep(0.02)
        finally:
            bot.stop()
            loop.join(timeout=30)
        assert not loop.is_alive()
        return undone()


@pytest.mark.parametrize(
    ("failing", "until"),
    [
        # the Sent copy's done mark meets a dropped connection: the effects runner is woken to record it
        pytest.param(1, "recorded", id="recorded-without-waiting-for-the-next-interval"),
        # stopped while the record waits out its backoff: the stop records it rather than leave it claimed
        pytest.param(2, "stopped", id="recorded-by-the-stop"),
    ],
)
def test_an_outcome_that_could_not_be_recorded_is_recorded_before_long(
    tmp_path: Path,
    imap_server: ImapServer,
    smtp_sink: SmtpSink,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: int,
    until: str,
) -> None:
    load_corpus(imap_server, corpus_dir, ["smp-001"])
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    assert run_with_records_failing(settings, smtp_sink, monkeypatch, failing=failing, until=until) == []
    assert len(imap_server.message_ids(SMP_BOX, "Sent")) == 1, "one copy, of this store's answer"


def test_effects_a_stage_left_claimed_are_run_when_the_pass_ends(
    tmp_path: Path, imap_server: ImapServer, smtp_sink: SmtpSink, corpus_dir: Path
) -> None:
    """A stage that stopped between its commit and its effects leaves them claimed by its worker: the
    end of the pass gives the claims back and runs them, rather than leave them until claims expire."""
    load_corpus(imap_server, corpus_dir, ["smp-001"])
    settings = make_settings(tmp_path, imap_server, smtp_sink)
    with Worker(settings) as bot:
        assert bot.single_pass().errors == []
        with bot.store.sessions() as session, session.begin():
            session.execute(update(EFFECTS).values(done_at=None, claimed_by=bot.name, claimed_at=utcnow()))
        with bot.store.sessions() as session:
            assert [effect[1] for effect in undone_effects(session)] == [EffectKind.FILE_ANSWER_IN_SENT]
        assert bot.single_pass().errors == []
        with bot.store.sessions() as session:
            assert undone_effects(session) == []
