"""What happens when a round fails, in one place: the log line naming the runner, the backoff, the stop.

A runner's round raises and its supervisor decides what follows, as GNU Mailman 3's master and
runner loop do between them: under ``run`` the same runner tries again after its backoff (doubling
to a cap, back to the start after a good round) until the worker stops; under ``run --once`` an
intake failure is noted in the summary and the pass goes on.
"""

from __future__ import annotations

import logging

from mailbot.runners.base import Runner

log = logging.getLogger(__name__)


def log_failure(runner: Runner, exc: Exception, retry_in_s: float | None = None) -> str:
    """Log a failed round of ``runner`` (and when it is tried again); returns the failure's text."""
    text = runner.failure_text(exc)
    line = text if retry_in_s is None else f"{text}; retrying in {retry_in_s:.0f} s"
    log.error("%s", line, exc_info=exc if runner.log_traceback else None, extra=runner.log_fields())
    return text


def supervise(runner: Runner) -> None:
    """Rounds of ``runner`` until its worker stops: a failed round is logged and tried again after a backoff."""
    try:
        while not runner.stopping.is_set():
            try:
                did_work = runner.round()
            except Exception as exc:
                delay = runner.backoff.after_failure()
                log_failure(runner, exc, delay)
                runner.stopping.wait(delay)
                continue
            runner.backoff.after_success()
            runner.snooze(did_work)
    finally:
        runner.close()
