"""Giving back what a failed round had claimed, so the next round (here or in another worker) takes it up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

GIVE_BACK_WITHIN_S = 30.0


def give_back(release: Callable[[], int], what: str, stopping: threading.Event) -> None:
    """Return what this worker claimed in a round that failed, for the next round or run to take up.

    Left alone, the claims would wait for their expiry on PostgreSQL (another worker cannot
    tell a failed round from a slow one), and later messages would be decided before them.
    The database may be what failed: keep trying for a while, as a restart takes seconds.
    """
    deadline = time.monotonic() + GIVE_BACK_WITHIN_S
    while True:
        try:
            released = release()
        except Exception as exc:
            if time.monotonic() >= deadline or stopping.is_set():
                log.warning("could not give back the %s this worker claimed (%s): they wait for expiry", what, exc)
                return
            stopping.wait(1.0)
            continue
        if released:
            log.info("gave back %d %s this worker had claimed", released, what)
        return
