"""The effects runner: what committed changes left to do outside the database, done after the fact.

Each stage runs the effects its own commit added straight away where they need nothing slow (a
review folder after a decision, Sent copies after a sending batch). This runner does the rest —
moves to the review IMAP folder, steps that failed and wait for their next try, whatever a stop
left undone — as the follow-up stage of ``run --once`` and, under ``run``, whenever deciding wakes
it or its interval passes (``mailbot.effects`` lists the steps).
"""

from __future__ import annotations

import threading

from mailbot.effect_runner import EffectRunner
from mailbot.runners.base import Backoff, Runner, Stage

# under ``run``, how often the runner looks for effects whose next try has come without being woken
EFFECTS_LOOK_EVERY_S = 60.0


class EffectsRunner(Runner):
    def __init__(self, effects: EffectRunner, stopping: threading.Event) -> None:
        super().__init__("effects", Stage.FOLLOW_UP, Backoff(5.0, 300.0), stopping, EFFECTS_LOOK_EVERY_S)
        self.effects = effects

    def round(self) -> bool:
        return self.effects.run_due() > 0

    def close(self) -> None:
        self.effects.close()
