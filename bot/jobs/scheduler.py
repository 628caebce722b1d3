"""The APScheduler instance: runs inside the bot's event loop, remembers jobs in SQL.

Jobs live in the ``apscheduler_jobs`` table at ``storage.database_url`` (SQLite by default,
PostgreSQL the same way), so schedules survive restarts. Only the scheduler leader runs a
scheduler on a database (:mod:`bot.jobs.leader_lease` says why). The job store's own
reads and writes (adding, running and rescheduling jobs) happen where APScheduler makes
them, on the event loop. A bot that was down for a while
finds several missed run times per job; ``coalesce`` turns them into one run, and the grace
time drops a run that is so late it would be meaningless (a morning post in the evening).
"""

from __future__ import annotations

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from bot.config import parse_duration
from bot.errors import TweetlikeError

JOBSTORE_TABLE = "apscheduler_jobs"
MISFIRE_GRACE_SECONDS = 3600
AUTOPOST_JOB_PREFIX = "autopost:"


def autopost_job_id(autopost_id: str) -> str:
    """The APScheduler job of an auto-post definition."""
    return AUTOPOST_JOB_PREFIX + autopost_id


class ScheduleError(TweetlikeError):
    """An auto-post or retrain schedule that cannot be built (bad cron, unknown timezone)."""


def build_scheduler(engine: Engine) -> AsyncIOScheduler:
    return AsyncIOScheduler(
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
