"""Engines, sessions and schema migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.archive import make_private_dir

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK = "mailbot-schema-upgrade"


def utcnow() -> datetime:
    """The time now, aware: storage reads the clock as ``mailbot.clock`` does, importing nothing of mailbot/."""
    return datetime.now(UTC)


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file gets WAL mode, a busy timeout and a private directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            make_private_dir(Path(parsed.database).resolve().parent)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _durable_again)
        _writers_take_turns(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


_DEFERS_DURABILITY = "mailbot_defers_durability"


def _durable_again(dbapi_connection: Any, record: Any) -> None:
    """The next user of a connection that deferred durability waits for the disk again."""
    if not record.info.pop(_DEFERS_DURABILITY, False) or dbapi_connection is None:
        return
    try:
        dbapi_connection.execute("PRAGMA synchronous=FULL")
    except Exception as exc:
        record.invalidate(exc)  # a new connection starts with FULL


_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_HOLDS_TURN = "mailbot_holds_write_turn"


class _Turns:
    """A lock granted in the order it was asked for.

    ``threading.Lock`` is not: a thread that releases it and asks again at once (the processor,
    deciding message after message) nearly always gets it back before a waiting thread wakes.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()
        self._taken = False

    def acquire(self, timeout: float) -> bool:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            mine = self._changed.wait_for(lambda: not self._taken and self._waiting[0] is ticket, timeout)
            self._waiting.remove(ticket)
            if mine:
                self._taken = True
            else:
                self._changed.notify_all()  # the one behind may be first now
            return mine

    def release(self) -> None:
        with self._changed:
            self._taken = False
            self._changed.notify_all()


def _writers_take_turns(engine: Engine) -> None:
    """Threads of this process write to SQLite one after another, handing over on a lock.

    SQLite alone makes a writer that finds the file locked sleep and retry (1, 2, 5 … 100 ms):
    a thread that writes now and then (the sender) then loses nearly every race against one that
    writes all the time (the processor), and answers wait for seconds. Here a writer waits on a
    lock that is handed over the moment the other's connection goes back to the pool, after its
    commit. Other processes still meet SQLite's busy timeout.
    """
    turn = _Turns()

    @event.listens_for(engine, "before_cursor_execute")
    def take_turn(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # bounded, so a thread writing through a second connection while its first holds the turn
        # ends in SQLite's own "database is locked" instead of waiting for itself forever
        if not connection.info.get(_HOLDS_TURN) and _WRITES.match(statement):
            connection.info[_HOLDS_TURN] = turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)

    def hand_over(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
        if record.info.pop(_HOLDS_TURN, False):
            turn.release()

    event.listen(engine, "checkin", hand_over)
    event.listen(engine, "invalidate", hand_over)


def defer_durability(session: Session) -> None:
    """Let this transaction's commit return before it is on disk; the next durable commit takes it there.

    Both databases write their log in order, so a commit that waits for the disk (SQLite's
    ``synchronous=FULL``, PostgreSQL's default) makes every commit before it durable too. Used
    where nothing leaves the machine on the strength of the commit alone: a crash of the machine
    may then lose the last such transactions, never a later durable one or part of one.
    """
    connection = session.connection()
    if is_postgres(connection.engine):
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
    else:
        connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        connection.info[_DEFERS_DURABILITY] = True


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed together at the end, or not at all."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("storage") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database).

    On PostgreSQL several workers may start at once: they take turns under an advisory lock, so
    the second finds the schema made instead of racing to create the same tables.
    """
    if not is_postgres(engine):
        command.upgrade(_alembic_config(engine), "head")
        return
    with engine.connect() as connection:
        connection.execute(select(func.pg_advisory_lock(func.hashtext(SCHEMA_LOCK))))
        connection.commit()
        try:
            command.upgrade(_alembic_config(engine), "head")
        finally:
            connection.execute(select(func.pg_advisory_unlock(func.hashtext(SCHEMA_LOCK))))
            connection.commit()


def shipped_revision(engine: Engine) -> str | None:
    """The newest revision this version's migrations make, read from the scripts (no connection)."""
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def schema_status(engine: Engine) -> tuple[str | None, str | None]:
    """(current revision in the database, newest revision shipped)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, shipped_revision(engine)
