"""The APScheduler instance: runs inside the bot's event loop, remembers jobs in SQL.

Jobs live in the ``apscheduler_jobs`` table at ``storage.database_url`` (SQLite by default,
PostgreSQL the same way), so schedules survive restarts. Only the scheduler leader runs a
scheduler on a database (:mod:`bot.jobs.leader_lease` says why).

APScheduler's ``AsyncIOScheduler`` looks at its job store on the event loop at every
wake-up; a database that is slow or held locked by another process (SQLite waits up to its
busy timeout) would then stall the loop and the Discord heartbeat with it. Here wake-ups do
that work on a thread of their own (:class:`OffLoopScheduler`): the loop only arms the next
wake-up and runs the due coroutine jobs. A bot that was down for a while
finds several missed run times per job; ``coalesce`` turns them into one run, and the grace
time drops a run that is so late it would be meaningless (a morning post in the evening).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler, run_in_event_loop
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from bot.config import parse_duration
from bot.errors import TweetlikeError

log = logging.getLogger(__name__)

JOBSTORE_TABLE = "apscheduler_jobs"
MISFIRE_GRACE_SECONDS = 3600
AUTOPOST_JOB_PREFIX = "autopost:"


def autopost_job_id(autopost_id: str) -> str:
    """The APScheduler job of an auto-post definition."""
    return AUTOPOST_JOB_PREFIX + autopost_id


class ScheduleError(TweetlikeError):
    """An auto-post or retrain schedule that cannot be built (bad cron, unknown timezone)."""


class _LoopExecutor(AsyncIOExecutor):
    """Starts due jobs on the event loop, whichever thread found them due."""

    def _do_submit_job(self, job: Job, run_times: list[Any]) -> None:
        self._eventloop.call_soon_threadsafe(super()._do_submit_job, job, run_times)


class OffLoopScheduler(AsyncIOScheduler):
    """An ``AsyncIOScheduler`` whose job-store work runs on one thread of its own.

    Wake-ups that arrive while one is being processed fold into a single further pass, so
    the thread never queues up behind a locked database.
    """

    _processing = False
    _again = False

    def start(self, paused: bool = False) -> None:
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="tweetlike-scheduler")
        super().start(paused)

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._worker.shutdown(wait=False)

    @run_in_event_loop
    def wakeup(self) -> None:
        self._stop_timer()
        if self._processing:
            self._again = True
            return
        self._processing = True
        pass_ = self._eventloop.run_in_executor(self._worker, self._process_jobs)
        pass_.add_done_callback(self._processed)

    def _processed(self, pass_: asyncio.Future[float | None]) -> None:
        self._processing = False
        if not self.running or self._eventloop is None:
            return
        if self._again:
            self._again = False
            self.wakeup()
            return
        if pass_.exception() is not None:
            log.error("looking for due jobs failed", exc_info=pass_.exception())
            self._start_timer(self.jobstore_retry_interval)
            return
        self._start_timer(pass_.result())

    def _create_default_executor(self) -> AsyncIOExecutor:
        return _LoopExecutor()


def build_scheduler(engine: Engine) -> AsyncIOScheduler:
    return OffLoopScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)},
        job_defaults={
            "coalesce": True,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            "max_instances": 1,
        },
        timezone="UTC",
    )


def build_trigger(every: str | None, cron: str | None, timezone: str = "UTC") -> BaseTrigger:
    """An interval trigger for ``every`` (down to seconds) or a crontab trigger."""
    try:
        if every is not None:
            return IntervalTrigger(seconds=parse_duration(every).total_seconds(), timezone=timezone)
        if cron is not None:
            return CronTrigger.from_crontab(cron, timezone=timezone)
    except ValueError as exc:
        raise ScheduleError(f"bad schedule: {exc}") from None
    except Exception as exc:  # zoneinfo raises its own errors for unknown zones
        raise ScheduleError(f"bad schedule timezone '{timezone}': {exc}") from None
    raise ScheduleError("a schedule needs 'every' (e.g. \"6h\") or 'cron'")


def describe_trigger(every: str | None, cron: str | None, timezone: str = "UTC") -> str:
    if every is not None:
        return f"every {every}"
    suffix = "" if timezone == "UTC" else f" ({timezone})"
    return f"cron {cron}{suffix}"
