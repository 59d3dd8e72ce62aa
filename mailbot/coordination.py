"""Several ``mailbot run`` workers on one PostgreSQL database: who does what, and why nothing is done twice.

Any number of workers, on any machines, may share one PostgreSQL database and the same
configuration. Each guarantee rests on the database, never on the workers knowing of each other:

- **Polling a mailbox** — one worker at a time, by :class:`MailboxLease`: a session-level advisory
  lock held on a connection of its own for as long as the worker polls. When the holder dies its
  connection closes, PostgreSQL drops the lock, and a worker still trying takes over. Polling is
  idempotent anyway (a message is recognised by Message-ID or sha256, a delivery by its UID, the
  folder cursor only moves forward), so the lease saves duplicate IMAP work and conflicting MOVEs;
  a brief overlap after a lost connection does no harm.
- **Processing a message** — ``MessagesToDecide.claim`` takes rows with ``FOR UPDATE SKIP LOCKED`` and
  marks them ``processing`` in the same transaction, so two workers never claim the same row. The
  decision re-reads the row under ``FOR UPDATE`` and stores nothing unless it is still in the state
  the worker claimed it in, so even a claim released too early yields one decision, not two.
- **A worker that died holding claims** — its rows stay ``processing`` until they are older than
  the claim expiry (derived from the parse timeout, see ``DecidingRunner.claim_expiry``); every
  worker's deciding runner gives such rows back regularly, and another worker decides them.
- **Decisions and reference numbers** — ``storage.decisions.lock_call`` takes a transaction-level advisory lock
  per call, so the decisions of one call are made one at a time across all workers (each sees the
  ones committed before it), and the per-call counter row is read ``FOR UPDATE``: reference
  numbers are unique and without gaps from rolled-back decisions.
- **Sending** — ``AnswersToSend.claim`` claims outbox rows with ``FOR UPDATE SKIP LOCKED`` and marks
  them ``sending`` before the SMTP conversation; a row a dead worker left ``sending`` or
  ``committing`` is settled once the SMTP timeout has passed three times: sent again, or found in
  the provider's Sent folder, or presumed delivered (see ``mailbot.send_recovery``).
- **Digests** — the ``DigestRun`` primary key (call, day): only the first worker's insert commits.
- **The schema** — :func:`storage.db.upgrade` lets workers starting together migrate one at a time;
  the others then find the schema current.

On SQLite there is one process by design, so the lease is always granted.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine

from storage.db import is_postgres
from storage.leases import close_for_good, connection_alive, lock_connection, try_session_lock

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "mailbot-mailbox"


class MailboxLease:
    """The right to poll one mailbox, held by at most one worker of a database at a time."""

    def __init__(self, engine: Engine, mailbox: str) -> None:
        self.engine = engine
        self.mailbox = mailbox
        self._connection: Connection | None = None
        self._guard = threading.Lock()

    @property
    def exclusive(self) -> bool:
        """Whether other workers can exist at all (otherwise the lease is a formality)."""
        return is_postgres(self.engine)

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True if this worker holds it now."""
        if not self.exclusive:
            return True
        with self._guard:
            if self._connection is not None:
                if connection_alive(self._connection):
                    return True
                self._drop()
            connection = lock_connection(self.engine)
            try:
                acquired = try_session_lock(connection, LEASE_NAMESPACE, self.mailbox)
            except Exception:
                close_for_good(connection)
                raise
            if not acquired:
                connection.close()  # holds nothing: back to the pool
                return False
            self._connection = connection
            log.info(
                "holding the lease of mailbox %s: this worker polls it", self.mailbox, extra={"mailbox": self.mailbox}
            )
            return True

    def held(self) -> bool:
        """True while the lease is ours: its connection still answers."""
        if not self.exclusive:
            return True
        with self._guard:
            if self._connection is None:
                return False
            if connection_alive(self._connection):
                return True
            self._drop()
            log.warning("lost the lease of mailbox %s: its connection closed", self.mailbox)
            return False

    def release(self) -> None:
        """Give the lease up; another worker may take it at once."""
        with self._guard:
            if self._connection is not None:
                self._drop()
                log.info("released the lease of mailbox %s", self.mailbox, extra={"mailbox": self.mailbox})

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            close_for_good(connection)
