"""The bot's storage: its database and its archive of raw messages, and what is kept in them.

``Storage`` opens them once and names what they hold: the messages waiting to be decided and the
answers waiting to be sent (``storage.queues``), and intake's records (``storage.intake_records``).
Operations that take part in a caller's transaction (a decision's rows, events) are functions
over a session, in ``storage.decisions``, ``storage.applications`` and ``storage.events``.
Nothing here imports from mailbot/.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.archive import RawArchive
from storage.db import is_postgres, session_factory
from storage.effects import UnrecordedEffects
from storage.intake_records import IntakeRecords
from storage.queues import AnswersToSend, MessagesToDecide


class Storage:
    """The database and the archive, with the two queues and intake's records kept in them."""

    def __init__(self, engine: Engine, archive: RawArchive) -> None:
        self.engine = engine
        self.archive = archive
        self.sessions: sessionmaker[Session] = session_factory(engine)
        self.to_decide = MessagesToDecide(self.sessions)
        self.to_send = AnswersToSend(self.sessions)
        self.intake = IntakeRecords(self.sessions, archive)
        self.unrecorded_effects = UnrecordedEffects()

    @property
    def concurrent(self) -> bool:
        """Several workers may share this database (row locks and advisory locks are available)."""
        return is_postgres(self.engine)
