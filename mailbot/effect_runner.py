"""Running effects after their commit: each step of ``mailbot.effects``, then its done mark or its next try.

The stage whose commit added an effect claimed by itself runs it straight after (``run_claimed``);
``run_due`` claims and runs every due one, including those a stop or a failure left behind. A step
that fails is logged and its effect given back with a growing delay; the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from mailbot.clock import utcnow
from mailbot.config import Settings
from mailbot.effects import STEPS, Outcomes, Step
from mailbot.oauth import Credentials, record_token_states
from mailbot.review import ReviewQueue
from mailbot.sent_folder import SentFolders
from storage import Storage
from storage.db import transaction
from storage.effects import DueEffect, claim_effects, mark_done, release_claims, schedule_retry
from storage.failpoints import failpoint

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
# on a database several workers share, a claim this old belongs to a worker taken for dead
CLAIM_EXPIRY = timedelta(minutes=10)
ROUND_LIMIT = 500
BATCH = 50  # claimed in one transaction: one Sent command files a batch's answers of a mailbox


def retry_delay(attempts: int) -> timedelta:
    """How long something that failed ``attempts`` times waits before its next try."""
    delay: timedelta = FIRST_RETRY * (2 ** min(max(attempts - 1, 0), 10))
    return min(delay, MAX_RETRY)


def effect_retry_delay(attempts: int) -> timedelta:
    """How long an effect that failed ``attempts`` times waits before its next try.

    The first failure is tried again at the next round, without waiting: the common cause is
    passing (a connection the database or a server reset), and the round after a failed one is
    often the last of a ``run --once``. From the second failure on, the wait doubles.
    """
    return timedelta(0) if attempts <= 1 else retry_delay(attempts - 1)


class EffectRunner:
    """Runs effects after their commit: each step, then its done mark or its next try."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        worker: str,
        review: ReviewQueue | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.review = review or ReviewQueue(settings.queue_dir)
        self._credentials = credentials
        self._sent_folders: SentFolders | None = None

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:  # only the IMAP steps need it
            self._credentials = Credentials(self.settings, record_token_states(self.store))
        return self._credentials

    @property
    def sent_folders(self) -> SentFolders:
        if self._sent_folders is None:
            self._sent_folders = SentFolders(self.settings, self.credentials)
        return self._sent_folders

    def close(self) -> None:
        """Log out of the Sent folders this runner opened."""
        folders, self._sent_folders = self._sent_folders, None
        if folders is not None:
            folders.close()

    def run_due(self, limit: int = ROUND_LIMIT) -> int:
        """Run every due effect once (at most ``limit``); returns how many were carried out.

        A round that cannot reach the database is logged and ends: its effects wait for the next.
        """
        done = claimed_so_far = 0
        try:
            # still claimed by this worker, so nobody else runs them
            done += self.run_claimed(self.store.unrecorded_effects.take())
            while claimed_so_far < limit:
                now = utcnow()
                batch = min(BATCH, limit - claimed_so_far)
                sole_worker = not self.store.concurrent
                claimed = claim_effects(self.store.sessions, self.worker, now, now - CLAIM_EXPIRY, batch, sole_worker)
                if not claimed:
                    break  # the ones that failed just now are due later, and not claimed again
                claimed_so_far += len(claimed)
                done += self.run_claimed(claimed)
        except Exception as exc:
            log.warning("running effects stopped (%s): the rest wait for the next round", exc)
        finally:
            self.close()
        return done

    def run_claimed(self, claimed: Sequence[DueEffect]) -> int:
        """Run effects this worker claimed, kind by kind in the order added; returns how many were done.

        Never raises for a step or its record: it runs after a commit that stands whatever happens here.
        """
        by_kind: dict[str, list[DueEffect]] = {}
        for effect in sorted(claimed, key=lambda e: e.id):
            by_kind.setdefault(effect.kind, []).append(effect)
        done = 0
        for kind, effects in by_kind.items():
            step = STEPS.get(kind)
            try:
                if step is None:
                    raise LookupError(f"no step for effects of kind {kind!r} (written by a newer version?)")
                failpoint("effect.step")
                outcomes = step.run(self, effects)
            except Exception as exc:
                outcomes = {effect.id: f"{exc.__class__.__name__}: {exc}" for effect in effects}
            try:
                done += self._record(step, effects, outcomes)
            except Exception as exc:
                # never the caller's failure: its own commit stands; the next round of this process
                # runs them again (idempotent steps, told an earlier try may have done the work)
                log.warning("could not record the outcome of %d effect(s) (%s): %s", len(effects), kind, exc)
                self.store.unrecorded_effects.hold(effects)
        return done

    def finish_after_stop(self) -> int:
        """Once every runner of this worker has stopped: give back the claims nobody of it will run
        (a stage that stopped between its commit and its effects, say), then run what is due.

        Returns how many effects were carried out. A database that cannot be reached leaves the
        claims to expire; another worker, or this one's next start, takes them up.
        """
        try:
            release_claims(self.store.sessions, self.worker)
        except Exception as exc:
            log.warning("could not give back this worker's claims on effects (%s): they expire", exc)
            return 0
        return self.run_due()

    def _record(self, step: Step | None, effects: Sequence[DueEffect], outcomes: Outcomes) -> int:
        """Mark done what the step finished (in one transaction); give the rest back for a later try."""
        finished = [e for e in effects if not isinstance(outcomes.get(e.id, "not run"), str)]
        if finished:
            now = utcnow()
            carried_out = [effect for effect in finished if outcomes[effect.id] is True]
            with transaction(self.store.sessions) as session:
                mark_done(session, [effect.id for effect in finished], now)  # one statement for a batch
                if step is not None and step.on_done is not None and carried_out:
                    step.on_done(session, carried_out)
                failpoint("effect.done")
        for effect in effects:
            error = outcomes.get(effect.id, "not run")
            if isinstance(error, str):
                due = utcnow() + effect_retry_delay(effect.attempts)
                log.warning("effect %d (%s) failed, tried again at %s: %s", effect.id, effect.kind, due, error)
                schedule_retry(self.store.sessions, effect.id, error, due)
        return len(finished)
