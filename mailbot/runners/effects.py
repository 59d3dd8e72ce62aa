"""The effects runner: what committed changes left to do outside the database, done after the fact.

Each stage runs the effects its own commit added straight away where they need nothing slow (a
review folder after a decision, Sent copies after a sending batch). This runner does the rest —
moves to the review IMAP folder, steps that failed and wait for their next try, whatever a stop
left undone — as the follow-up stage of ``run --once`` and, under ``run``, whenever deciding wakes
it, a step's outcome could not be recorded, or its interval passes (``mailbot.effects`` lists the
steps). When the worker stops it gives back its claims and runs what is due a last time.
"""

from __future__ import annotations

import threading

from mailbot.effect_runner import EffectRunner
from mailbot.runners.base import Backoff, Runner, Stage

# under ``run``, how often the runner looks for effects whose next try has come without being woken
EFFECTS_LOOK_EVERY_S = 60.0


class EffectsNotRecorded(Exception):
    """Steps ran, but the database took no record of them: the round counts as failed and is tried
    again after the runner's backoff rather than at its next interval."""


class EffectsRunner(Runner):
    log_traceback = False  # the one failure a round raises is EffectsNotRecorded, whose text says it all

    def __init__(self, effects: EffectRunner, stopping: threading.Event) -> None:
        super().__init__("effects", Stage.FOLLOW_UP, Backoff(5.0, 300.0), stopping, EFFECTS_LOOK_EVERY_S)
        self.effects = effects
        effects.store.unrecorded_effects.on_hold = self.wake.set

    def round(self) -> bool:
        done = self.effects.run_due()
        left = len(self.effects.store.unrecorded_effects)
        if left:
            raise EffectsNotRecorded(f"{left} effect(s) ran but their outcome could not be recorded")
        return done > 0

    def after_stop(self) -> None:
        self.effects.finish_after_stop()

    def close(self) -> None:
        self.effects.close()
