"""Putting a digest in the outbox once per call and day, however many workers try: the ``digests`` row
and the outbox row commit together, and the row's primary key (call, day) lets only one of them in.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError

from mailbot.config import CallSettings, Settings
from mailbot.digest.contents import DigestData, build_digest
from mailbot.digest.moment import call_at
from mailbot.digest.render import compose_digest, digest_message_id
from mailbot.export import to_xlsx
from mailbot.mail_writer import ComposedMail
from mailbot.outbox import Outbox
from storage import Storage
from storage.db import transaction
from storage.digests import digest_run, record_digest_run
from storage.events import EventKind, add_event
from storage.failpoints import failpoint
from templates import TemplateSet

log = logging.getLogger(__name__)

ACTOR = "digest"


def queue_digest(
    store: Storage,
    settings: Settings,
    call: CallSettings,
    day: date,
    now: datetime,
    late: bool,
    templates: TemplateSet | None = None,
    queued_at: datetime | None = None,
) -> int | None:
    """Put the digest of ``call`` for ``day`` as it stood at ``now`` in the outbox; its outbox id, or None if done.

    The ``digests`` row is dated ``now``, the moment the digest shows: the next digest counts what was
    decided after it as new. The outbox row is dated ``queued_at`` (default ``now``), when it really
    was queued: the sender retries for ``retry_for_hours`` from then, and a past day's digest, whose
    ``now`` is the end of that day, must not be given up at its first temporary refusal.

    Safe to call from several processes at once: only the first commit of the (call, day) row wins.
    """
    chosen = templates or TemplateSet(settings.templates.dir)
    composed = _compose(store, settings, call, day, now, late, chosen)
    if composed is None:
        return None
    data, mail = composed
    try:
        with transaction(store.sessions) as session:
            run = record_digest_run(session, call.id, day, now, late)  # a second worker stops here
            run.outbox_id = Outbox(settings, chosen).digest(session, call, mail, queued_at or now)
            add_event(
                session,
                EventKind.DIGEST_QUEUED,
                ACTOR,
                call=call.id,
                day=day.isoformat(),
                late=late,
                outbox_id=run.outbox_id,
                new=data.new_count,
                attention=data.attention_count,
            )
            failpoint("digest.insert")
    except IntegrityError:
        log.info("the %s digest of %s was queued by another worker", day.isoformat(), call.id)
        return None
    log.info(
        "queued the %s digest of %s%s: %d new, %d to handle",
        day.isoformat(),
        call.id,
        " (late)" if late else "",
        data.new_count,
        data.attention_count,
    )
    return run.outbox_id


def _compose(
    store: Storage, settings: Settings, call: CallSettings, day: date, now: datetime, late: bool, templates: TemplateSet
) -> tuple[DigestData, ComposedMail] | None:
    """The digest's data and its mail, read outside the queueing transaction; None if already queued."""
    with store.sessions() as session:
        if digest_run(session, call.id, day) is not None:
            return None
        data = build_digest(session, settings, call, day, now, late=late)
        # the workbook shows the same moment as the words: a past day's digest carries that day's state
        workbook = to_xlsx(
            session, call.id, settings=settings, templates=templates, snapshot=call_at(session, call.id, now)
        )
    return data, compose_digest(data, templates, workbook, digest_message_id(call, day))
