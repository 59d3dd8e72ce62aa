"""The recorded states of OAuth2 refresh tokens, read back for ``status`` and the digest."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.events import EventKind
from storage.models import Event

# how many recorded token states are read (a few per run of the bot)
EVENTS_READ = 1000

TokenKey = tuple[str, str]  # (the refresh token's environment variable, the token endpoint)


def latest_token_states(session: Session) -> dict[TokenKey, tuple[datetime, Mapping[str, object]]]:
    """The newest recorded state of each refresh token: when, and the event's detail."""
    rows = session.execute(
        select(Event.at, Event.detail)
        .where(Event.kind == EventKind.OAUTH_REFRESH)
        .order_by(Event.id.desc())
        .limit(EVENTS_READ)
    ).all()
    latest: dict[TokenKey, tuple[datetime, Mapping[str, object]]] = {}
    for at, detail in rows:
        latest.setdefault((str(detail.get("refresh_token_env")), str(detail.get("token_url"))), (at, detail))
    return latest
