"""When the daily digests go out: one APScheduler cron job per call, and a catch-up at start.

The schedule itself lives only in memory; what was sent lives in the database (``digests`` rows).
So a restart loses nothing: :meth:`DigestScheduler.catch_up` looks at today's row and sends a late
digest, saying so, if the bot was down at digest time. Several workers may each run a scheduler on
one database; :func:`mailbot.digest.queueing.queue_digest` lets exactly one of them queue each digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from mailbot.clock import utcnow
from mailbot.config import CallSettings, Settings
from mailbot.digest.queueing import queue_digest
from mailbot.outbox import coordinator_addresses
from storage import Storage
from storage.models import DigestRun
from templates import TemplateSet

log = logging.getLogger(__name__)

# APScheduler skips a run that starts more than misfire_grace_time late (default: 1 second) and says
# so only through an event. A digest an hour or a day late, marked late, is worth more than none, so
# a run is taken up to just short of a day late, when the next day's digest is due anyway.
MISFIRE_GRACE = timedelta(hours=23)
# Several missed runs (a machine asleep for days) become one digest, not a burst of stale ones.
COALESCE = True
# A run that starts this much after its time says in the digest that it is late.
LATE_AFTER = timedelta(minutes=10)
# After the deadline, late forms, questions and bounces keep coming for a while; then digests stop.
DAYS_AFTER_CLOSE = 14


def digest_days(call: CallSettings, zone: ZoneInfo) -> tuple[date, date]:
    """The first and last day a call gets a scheduled digest (``mailbot digest --send`` works any day)."""
    first = call.opens.astimezone(zone).date()
    last = call.effective_deadline.astimezone(zone).date() + timedelta(days=DAYS_AFTER_CLOSE)
    return first, last


class DigestScheduler:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        templates: TemplateSet,
        on_queued: Callable[[], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.templates = templates
        self.on_queued = on_queued
        self.clock = clock
        self.zone = ZoneInfo(settings.digest.timezone)
        self._scheduler = BackgroundScheduler(timezone=self.zone)
        self._scheduler.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)

    @property
    def calls(self) -> list[CallSettings]:
        """The calls that get digests: all with a coordinator, unless ``[digest] enabled = false``."""
        if not self.settings.digest.enabled:
            return []
        return [call for call in self.settings.call if coordinator_addresses(call)]

    def due_at(self, day: date) -> datetime:
        return datetime.combine(day, self.settings.digest.time, tzinfo=self.zone)

    def latest_due_day(self, now: datetime) -> date:
        """The last day whose digest time has come by ``now``."""
        today = now.astimezone(self.zone).date()
        return today if now >= self.due_at(today) else today - timedelta(days=1)

    def in_season(self, call: CallSettings, day: date) -> bool:
        first, last = digest_days(call, self.zone)
        return first <= day <= last

    def already_queued(self, call: CallSettings, day: date) -> bool:
        with self.store.sessions() as session:
            return session.get(DigestRun, (call.id, day)) is not None

    def queue(self, call: CallSettings, day: date, now: datetime, late: bool) -> int | None:
        outbox_id = queue_digest(self.store, self.settings, call, day, now, late, self.templates)
        if outbox_id is not None:
            self.on_queued()
        return outbox_id

    # --- the two ways a digest is started -------------------------------------------------------

    def run_scheduled(self, call_id: str) -> int | None:
        """The cron job: the digest of the day whose time has just come (late if the job ran late)."""
        call = self.settings.call_by_id(call_id)
        now = self.clock()
        day = self.latest_due_day(now)
        if not self.in_season(call, day):
            log.debug("no digest for %s on %s: outside the call's season", call.id, day.isoformat())
            return None
        return self.queue(call, day, now, late=now - self.due_at(day) > LATE_AFTER)

    def catch_up(self, now: datetime) -> list[int]:
        """Queue today's digest of every call whose digest time has passed without one (marked late)."""
        today = now.astimezone(self.zone).date()
        queued: list[int] = []
        if now < self.due_at(today):
            return queued
        for call in self.calls:
            if not self.in_season(call, today) or self.already_queued(call, today):
                continue
            try:
                outbox_id = self.queue(call, today, now, late=True)
            except Exception:
                # one call's failure must not keep the others' digests or the bot from starting
                log.exception("could not queue the catch-up digest of %s", call.id)
                continue
            if outbox_id is not None:
                log.warning(
                    "the %s digest of %s was missed (not running at %s); sent it late",
                    today.isoformat(),
                    call.id,
                    self.settings.digest.time.isoformat("minutes"),
                )
                queued.append(outbox_id)
        return queued

    # --- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule one daily job per call, start the scheduler, then catch up on a missed digest."""
        at = self.settings.digest.time
        for call in self.calls:
            self._scheduler.add_job(
                self.run_scheduled,
                CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=self.zone),
                args=[call.id],
                id=f"digest:{call.id}",
                name=f"daily digest of {call.id}",
                misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
                coalesce=COALESCE,
                max_instances=1,
                replace_existing=True,
            )
        self._scheduler.start()
        for job in self._scheduler.get_jobs():
            log.info("%s: next at %s", job.name, job.next_run_time.isoformat())
        self.catch_up(self.clock())

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED and isinstance(event, JobExecutionEvent):
            log.error(
                "%s was missed: due at %s, and more than %s ago",
                event.job_id,
                event.scheduled_run_time.isoformat(),
                MISFIRE_GRACE,
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("%s is still running from its last time; this run is skipped", event.job_id)
        elif isinstance(event, JobExecutionEvent) and event.exception is not None:
            log.error(
                "%s failed: %s",
                event.job_id,
                event.exception,
                exc_info=(type(event.exception), event.exception, event.exception.__traceback__),
            )
