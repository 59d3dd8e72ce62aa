"""Timezone-aware time: one place to read the clock, so nothing naive slips in."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

BEIJING = ZoneInfo("Asia/Shanghai")

__all__ = ["BEIJING", "UTC", "ensure_aware", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def ensure_aware(value: datetime, assume: ZoneInfo | None = None) -> datetime:
    """Attach ``assume`` (UTC if not given) to a naive datetime; leave aware ones alone."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    return value.replace(tzinfo=assume or UTC)
