"""The two ways a worker's runners run: one pass in stage order, or each in a thread until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailbot.deciding import Processed
from mailbot.intake import PollResult
from mailbot.runners.base import Runner, Stage
from mailbot.runners.supervision import log_failure, supervise
from mailbot.sender import SendResult

log = logging.getLogger(__name__)

# while deciding lasts, a single pass's sending looks for answers at least this often (a decision wakes it sooner)
SENDING_LOOKS_EVERY_S = 1.0
# how long a stopping worker waits for each runner to finish its round
STOP_WITHIN_S = 60.0


@dataclass
class RunSummary:
    """What a single pass did: what intake brought in, what was decided and sent, and what failed."""

    polled: list[PollResult] = field(default_factory=list)
    processed: list[Processed] = field(default_factory=list)
    sent: list[SendResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def of_stage(runners: Sequence[Runner], stage: Stage) -> list[Runner]:
    return [runner for runner in runners if runner.stage is stage]


def take_in(runners: Sequence[Runner], summary: RunSummary) -> None:
    """One round of every intake runner; a failure is logged and noted in ``summary``, and the others go on."""
    for runner in of_stage(runners, Stage.INTAKE):
        try:
            runner.round()
            runner.report(summary)
        except Exception as exc:
            summary.errors.append(log_failure(runner, exc))
        finally:
            runner.close()


def single_pass(runners: Sequence[Runner]) -> RunSummary:
    """Read every mailbox, then decide everything while answers go out as soon as they are decided.

    Intake finishes before deciding starts, so a pass decides its messages in arrival order even
    when a server's UIDs do not follow arrival. A failure of deciding or sending ends the pass; one
    of intake or the follow-up is noted in the summary. The pass ends as a stopped ``run`` does: each
    runner finishes up (the effects runner gives back its claims and runs what is due).
    """
    summary = RunSummary()
    for runner in runners:
        if runner.stage is not Stage.SCHEDULED:
            runner.prepare()
    take_in(runners, summary)
    decide_while_sending(of_stage(runners, Stage.DECIDING), of_stage(runners, Stage.SENDING), summary)
    for runner in of_stage(runners, Stage.FOLLOW_UP):
        try:
            runner.round()
            runner.report(summary)
        except Exception as exc:
            summary.errors.append(log_failure(runner, exc))
    summary.errors.extend(finish_after_stop(runners))
    return summary


def finish_after_stop(runners: Sequence[Runner]) -> list[str]:
    """Once no runner is mid-round: each finishes up (``Runner.after_stop``); returns what failed."""
    failures = []
    for runner in runners:
        try:
            runner.after_stop()
        except Exception as exc:
            failures.append(log_failure(runner, exc))
    return failures


def decide_while_sending(deciding: Sequence[Runner], sending: Sequence[Runner], summary: RunSummary) -> None:
    """One round of each deciding runner while the sending runners go round beside them, then once more."""
    deciding_over = threading.Event()
    failures: list[BaseException] = []

    def send_while_deciding(runner: Runner) -> None:
        try:
            while True:
                over = deciding_over.is_set()
                runner.round()
                runner.report(summary)
                if over:
                    return
                runner.wake.wait(SENDING_LOOKS_EVERY_S)
                runner.wake.clear()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send_while_deciding, args=(r,), name=f"{r.name}-once") for r in sending]
    for thread in threads:
        thread.start()
    try:
        for runner in deciding:
            runner.round()
            runner.report(summary)
    finally:
        deciding_over.set()
        for runner in sending:
            runner.wake.set()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


def run_until_stopped(runners: Sequence[Runner], stopping: threading.Event, started: str) -> None:
    """Each runner in a supervised thread of its own until ``stopping`` is set; then wait for them to finish.

    ``started`` is logged once every thread runs (what a supervisor of processes waits for).
    """
    for runner in runners:
        runner.prepare()
    threads = [threading.Thread(target=supervise, args=(r,), name=r.name, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    log.info("%s", started)
    stopping.wait()
    for thread in threads:
        thread.join(timeout=STOP_WITHIN_S)
    still_running = [thread.name for thread in threads if thread.is_alive()]
    if still_running:
        log.warning("stopped with runner(s) still in a round: %s", ", ".join(still_running))
        return
    finish_after_stop(runners)
    for runner in runners:
        runner.close()
    log.info("stopped cleanly")
