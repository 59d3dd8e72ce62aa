"""The database schema: every message, where it was delivered, what was decided, what was sent.

A message row is the unit of work and doubles as a durable queue (``state``), in the way a mail
server's spool does: intake inserts ``received`` rows, the processor moves each to ``done`` or
``review``; the outbox is the sender's queue. Times are stored timezone-aware (UTC).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class AwareDateTime(TypeDecorator[datetime]):
    """Stores UTC and always gives back an aware datetime (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; all times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MessageState(StrEnum):
    RECEIVED = "received"  # archived and recorded, not yet decided
    PROCESSING = "processing"  # claimed by a worker
    DONE = "done"  # decided; any acknowledgement is in the outbox
    REVIEW = "review"  # needs a person: unreadable, or a stage failed


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # in an SMTP conversation that has not yet handed over the end of the message
    COMMITTING = "committing"  # the end of the message is being handed over: the server may have it
    SENT = "sent"
    FAILED = "failed"  # permanent refusal or retries exhausted
    SUPPRESSED = "suppressed"  # a guard decided not to send (rate limit, own address)


class SendVerdict(StrEnum):
    """What became of a send a stop interrupted (the ``EventKind.OUTBOX_RECOVERED`` event says which)."""

    AGAIN = "again"  # the end of the message never left: sent again
    FOUND = "found"  # the provider's Sent folder holds it
    PRESUMED = "presumed"  # nothing can tell; counted as delivered, since a second copy is worse


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: AwareDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Message-ID when it has one, else "sha256:<hex>": how replies, revisions and exports name a message
    message_key: Mapped[str] = mapped_column(String(998), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mailbox: Mapped[str] = mapped_column(String(200))
    call_id: Mapped[str | None] = mapped_column(String(100), index=True)
    arrival: Mapped[datetime]
    recorded_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(20))  # imap | import
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str] = mapped_column(String(998), default="")

    state: Mapped[str] = mapped_column(String(20), default=MessageState.RECEIVED)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    outcome: Mapped[str | None] = mapped_column(String(30), index=True)
    reason: Mapped[str | None] = mapped_column(String(60))
    reference: Mapped[str | None] = mapped_column(String(40), unique=True)
    supersedes_key: Mapped[str | None] = mapped_column(String(998))
    duplicate_of_key: Mapped[str | None] = mapped_column(String(998))
    application_id: Mapped[int | None] = mapped_column(ForeignKey("applications.id"))
    # who the form names and what it is, as the rules compare them (kept in columns so that an
    # earlier application is found by index, not by reading every earlier message)
    form_sha256: Mapped[str | None] = mapped_column(String(64))
    project_title: Mapped[str | None] = mapped_column(Text)
    person_email: Mapped[str | None] = mapped_column(String(500))
    person_phone: Mapped[str | None] = mapped_column(String(100))
    person_name_key: Mapped[str | None] = mapped_column(String(500))
    person_institution_key: Mapped[str | None] = mapped_column(String(500))
    decided_at: Mapped[datetime | None]
    purged_at: Mapped[datetime | None]
    # the large values last: SQLite keeps a row's columns in this order, and a query that reads
    # only the small ones then never walks the overflow pages of a whole reading
    decision: Mapped[dict[str, Any] | None]
    reading: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="message")
    attachments: Mapped[list[AttachmentRecord]] = relationship(back_populates="message")
    application: Mapped[Application | None] = relationship()

    __table_args__ = (
        Index("ix_messages_call_arrival", "call_id", "arrival"),
        # claims take the oldest received messages: in index order, without sorting the backlog
        Index("ix_messages_state_arrival", "state", "arrival", "id"),
        Index("ix_messages_call_email", "call_id", "person_email"),
        Index("ix_messages_call_phone", "call_id", "person_phone"),
        Index("ix_messages_call_name_place", "call_id", "person_name_key", "person_institution_key"),
        Index("ix_messages_call_form", "call_id", "form_sha256"),
        # every message of an application, for the rules that look at an application whole
        Index("ix_messages_application", "application_id"),
    )


class Delivery(Base):
    """One copy of a message in one IMAP folder (a message may arrive more than once)."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    mailbox: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime]

    message: Mapped[Message] = relationship(back_populates="deliveries")

    __table_args__ = (UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),)


class MailboxCursor(Base):
    """How far intake has read a folder, and how the last poll went."""

    __tablename__ = "mailbox_cursors"

    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_success: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]


class Applicant(Base):
    __tablename__ = "applicants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(500))
    name_key: Mapped[str | None] = mapped_column(String(500))
    institution_key: Mapped[str | None] = mapped_column(String(500))
    email: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(100))


class Application(Base):
    """One person's project in one call; revisions replace its current form, duplicates get their own."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(100), index=True)
    application_key: Mapped[str] = mapped_column(String(998), unique=True)  # first message's key
    applicant_id: Mapped[int] = mapped_column(ForeignKey("applicants.id"))
    current_message_pk: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(30))  # accepted | incomplete | duplicate | late
    duplicate_of_key: Mapped[str | None] = mapped_column(String(998))
    project_title: Mapped[str | None] = mapped_column(Text)
    fields: Mapped[dict[str, Any]]
    missing: Mapped[list[Any]]
    flags: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    applicant: Mapped[Applicant] = relationship()


class AttachmentRecord(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(30))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))

    message: Mapped[Message] = relationship(back_populates="attachments")


class OutboxMail(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # ack | digest | notice
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    call_id: Mapped[str | None] = mapped_column(String(100))
    mailbox: Mapped[str | None] = mapped_column(String(200))  # whose Sent folder gets the copy
    sender: Mapped[str] = mapped_column(String(998))
    recipients: Mapped[list[Any]]
    to_addr: Mapped[str | None] = mapped_column(String(998))  # the person answered
    # the recipient as the limits count it: one spelling per mailbox (mailbot.security.recipient_key)
    to_key: Mapped[str | None] = mapped_column(String(320))
    to_domain: Mapped[str | None] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(20), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    sending_since: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_reply: Mapped[str | None] = mapped_column(Text)
    bounced_at: Mapped[datetime | None]
    filed_in_sent: Mapped[bool] = mapped_column(default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_outbox_to_created", "to_addr", "created_at"),
        # the answer limits count from these indexes alone (storage.answering)
        Index("ix_outbox_key_created", "to_key", "created_at", "kind", "state"),
        Index("ix_outbox_domain_created", "to_domain", "created_at", "kind", "state"),
        Index("ix_outbox_created", "created_at", "kind", "state"),
        Index("ix_outbox_state_due", "state", "next_attempt_at", "id"),
    )


class Event(Base):
    """Append-only log of what happened and who did it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str] = mapped_column(String(200))
    message_pk: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[dict[str, Any]]


class Effect(Base):
    """A step outside the database that a committed change implies: a file to write or delete, mail to move.

    Inserted by the transaction that decided it, run after that commit (by ``mailbot.effects``),
    and marked done; a failed step waits ``due_at`` for its next try. A row with ``claimed_by`` set
    is being run by that worker, unless ``claimed_at`` is so old that the worker is taken for dead.
    """

    __tablename__ = "effects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    message_pk: Mapped[int | None] = mapped_column(Integer)
    outbox_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    due_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]

    # the due ones are found from the index alone, however many are done
    __table_args__ = (Index("ix_effects_undone_due", "done_at", "due_at", "id"),)


class CallCounter(Base):
    """The last reference number handed out per call: never reused."""

    __tablename__ = "call_counters"

    call_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class DigestRun(Base):
    __tablename__ = "digests"

    call_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    created_at: Mapped[datetime]
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    late: Mapped[bool] = mapped_column(default=False)


# The tables themselves, for statements that need no ORM objects (counts, columns, marks): an
# ORM-enabled statement costs several times the Python of the table statement for the same SQL,
# and some of these run several times for every message (a decision's writes are all of this kind).
MESSAGES = cast(Table, Message.__table__)
APPLICANTS = cast(Table, Applicant.__table__)
APPLICATIONS = cast(Table, Application.__table__)
ATTACHMENTS = cast(Table, AttachmentRecord.__table__)
OUTBOX = cast(Table, OutboxMail.__table__)
EVENTS = cast(Table, Event.__table__)
COUNTERS = cast(Table, CallCounter.__table__)
EFFECTS = cast(Table, Effect.__table__)
