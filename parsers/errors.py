"""The one exception readers raise: a document that cannot be read, and why."""

from __future__ import annotations

from parsers.model import Unreadable


class CannotRead(Exception):
    def __init__(self, reason: Unreadable) -> None:
        super().__init__(f"{reason.reason}: {reason.detail}")
        self.reason = reason
