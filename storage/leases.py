"""Session-level advisory locks of PostgreSQL, each held on a connection of its own.

A lock lives as long as its connection: a worker that dies loses its connection and with it the
lock, so another worker can take over (``mailbot.coordination.MailboxLease`` uses one per mailbox).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, Select, func, select, text
from sqlalchemy.exc import SQLAlchemyError

# A machine that loses power or network never closes its connection; these make the server give
# up on it within about a minute (instead of the system default of hours), freeing its locks.
SERVER_KEEPALIVES = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


def _advisory(function: str, namespace: str, name: str) -> Select[tuple[bool]]:
    """An advisory-lock call in the two-key form, which never meets the one-key locks of storage.decisions.lock_call."""
    return select(getattr(func, function)(func.hashtext(namespace), func.hashtext(name)))


def lock_connection(engine: Engine) -> Connection:
    """A connection for a session-level lock: autocommit, so it never sits idle inside a transaction."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def try_session_lock(connection: Connection, namespace: str, name: str) -> bool:
    """Take the lock ``(namespace, name)`` on ``connection`` if nobody holds it; True if taken.

    A taken lock's connection gets the server keepalives, so a vanished machine frees it soon.
    """
    acquired = bool(connection.scalar(_advisory("pg_try_advisory_lock", namespace, name)))
    if acquired:
        for setting, value in SERVER_KEEPALIVES.items():
            connection.execute(text(f"SET {setting} = {value:d}"))
    return acquired


def connection_alive(connection: Connection) -> bool:
    """Whether the connection (and so every lock it holds) still answers."""
    try:
        connection.scalar(select(1))
    except SQLAlchemyError:
        return False
    return True


def close_for_good(connection: Connection) -> None:
    """End the connection's database session, and with it every lock it holds.

    It must not go back to the pool: a pooled session would keep the lock for whoever borrows it.
    """
    connection.invalidate()
    connection.close()
