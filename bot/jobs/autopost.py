"""Auto-posts: generate in an account's voice on a schedule and post to Discord (and X).

Definitions live in the ``tweetlike_autoposts`` table; each has one APScheduler job
``autopost:<id>`` whose function is the module-level :func:`run_autopost`, taking only the id,
so the persistent job store can pickle it. Entries from the config file (``[[autopost]]``)
get stable ids derived from handle and channel and are reconciled at start-up: added,
rescheduled when changed (unchanged ones keep their next run time) and removed when gone
from the file. Runtime ones (``/autopost add``) are left alone.

A failed post (channel gone, missing permission, X error) is logged and kept as the entry's
``last_error`` for ``/jobs`` and ``/autopost list``; it never reaches the scheduler.

Only the scheduler leader has an :class:`Autoposts`; other processes add and remove
auto-posts through it (:mod:`bot.jobs.requests`). Its synchronous methods touch the database
and the job store, so async callers run them in a thread (APScheduler's scheduler takes
changes from any thread).
"""

from __future__ import annotations

import asyncio
import logging
import random

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler

from bot.config import AutopostSettings, Settings
from bot.core.ports import AutopostView, Notifier
from bot.errors import TweetlikeError, first_line
from bot.generation.backends import Generator
from bot.jobs import runtime
from bot.jobs.announce import generate_tweets
from bot.jobs.scheduler import AUTOPOST_JOB_PREFIX as JOB_PREFIX
from bot.jobs.scheduler import build_trigger
from bot.jobs.state import AutopostRecord, StateStore, new_id, now_iso
from bot.jobs.views import autopost_view, autopost_views

log = logging.getLogger(__name__)


async def run_autopost(autopost_id: str) -> None:
    """APScheduler entry point (must stay importable as ``bot.jobs.autopost:run_autopost``)."""
    await runtime.current().autopost_jobs.run(autopost_id)


def config_ids(entries: list[AutopostSettings]) -> list[str]:
    """Stable ids for config entries: ``cfg-<model>-<channel>``, numbered when repeated."""
    ids: list[str] = []
    for entry in entries:
        base = f"cfg-{entry.handle}-{entry.channel_id}"
        candidate, n = base, 1
        while candidate in ids:
            n += 1
            candidate = f"{base}-{n}"
        ids.append(candidate)
    return ids


class Autoposts:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        scheduler: BaseScheduler,
        engine: Generator,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.state = state
        self.scheduler = scheduler
        self.engine = engine
        self.notifier = notifier
        self._random = random.Random()

    # -- definitions ---------------------------------------------------------------------

    def reconcile(self, entries: list[AutopostSettings]) -> None:
        """Make the stored schedules match the config file and the definitions table."""
        wanted = {
            autopost_id: AutopostRecord(
                id=autopost_id,
                model=entry.handle,
                channel_id=entry.channel_id,
                every=entry.every,
                cron=entry.cron,
                timezone=entry.timezone,
                prompts=list(entry.prompts),
                post_to_x=entry.post_to_x,
                from_config=True,
            )
            for autopost_id, entry in zip(config_ids(entries), entries, strict=True)
        }
        stored = {record.id: record for record in self.state.autoposts()}
        for autopost_id, record in wanted.items():
            old = stored.get(autopost_id)
            if old is not None and old.same_schedule(record) and self._job(autopost_id):
                continue
            self.state.save_autopost(record)
            self._schedule(record)
            log.info("auto-post %s %s from the config", autopost_id, "updated" if old else "added")
        for autopost_id, record in stored.items():
            if record.from_config and autopost_id not in wanted:
                self._delete(autopost_id)
                log.info("auto-post %s removed (no longer in the config)", autopost_id)
            elif not record.from_config and self._job(autopost_id) is None:
                self._schedule(record)
        known = set(wanted) | {r.id for r in stored.values() if not r.from_config}
        for job in self.scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id.removeprefix(JOB_PREFIX) not in known:
                job.remove()

    def add(
        self,
        model: str,
        channel_id: int,
        *,
        every: str | None,
        cron: str | None,
        prompts: list[str],
        post_to_x: bool,
        timezone: str = "UTC",
    ) -> AutopostView:
        record = AutopostRecord(
            id=new_id(),
            model=model,
            channel_id=channel_id,
            every=every,
            cron=cron,
            timezone=timezone,
            prompts=list(prompts),
            post_to_x=post_to_x,
            from_config=False,
            created_at=now_iso(),
        )
        build_trigger(every, cron, timezone)  # refuse a bad schedule before storing anything
        self.state.save_autopost(record)
        self._schedule(record)
        log.info("auto-post %s added for %s in channel %d", record.id, model, channel_id)
        return self._view(record)

    def remove(self, autopost_id: str) -> bool:
        record = self.state.autopost(autopost_id)
        if record is None:
            return False
        if record.from_config:
            raise TweetlikeError(
                f"auto-post {autopost_id} comes from the config file; remove it there and restart"
            )
        self._delete(autopost_id)
        return True

    def views(self) -> list[AutopostView]:
        return autopost_views(self.state)

    def _schedule(self, record: AutopostRecord) -> None:
        self.scheduler.add_job(
            run_autopost,
            build_trigger(record.every, record.cron, record.timezone),
            args=[record.id],
            id=JOB_PREFIX + record.id,
            name=f"autopost {record.model} -> {record.channel_id}",
            replace_existing=True,
        )

    def _delete(self, autopost_id: str) -> None:
        self.state.delete_autopost(autopost_id)
        if self._job(autopost_id) is not None:
            self.scheduler.remove_job(JOB_PREFIX + autopost_id)

    def _job(self, autopost_id: str) -> Job | None:
        return self.scheduler.get_job(JOB_PREFIX + autopost_id)

    def _view(self, record: AutopostRecord) -> AutopostView:
        job = self._job(record.id)
        return autopost_view(record, job.next_run_time if job is not None else None)

    # -- running -------------------------------------------------------------------------

    async def run(self, autopost_id: str) -> None:
        record = await asyncio.to_thread(self.state.autopost, autopost_id)
        if record is None:
            log.warning("auto-post %s fired but is no longer defined", autopost_id)
            return
        prompt = self._random.choice(record.prompts) if record.prompts else ""
        errors: list[str] = []
        try:
            tweets = await generate_tweets(
                self.engine,
                record.model,
                prompt,
                timeout=self.settings.generation.request_timeout_seconds,
            )
        except Exception as exc:
            errors.append(f"generating failed: {first_line(exc)}")
        else:
            try:
                await self.notifier.post_tweets(record.channel_id, tweets)
            except Exception as exc:
                errors.append(f"posting to channel {record.channel_id} failed: {first_line(exc)}")
            if record.post_to_x and tweets.tweets:
                try:
                    await asyncio.to_thread(_post_to_x, self.settings, tweets.tweets[0])
                except Exception as exc:
                    errors.append(f"posting to X failed: {first_line(exc)}")
        error = "; ".join(errors) or None
        if error:
            log.warning("auto-post %s (%s): %s", autopost_id, record.model, error)
        await asyncio.to_thread(self.state.record_autopost_run, autopost_id, error)


def _post_to_x(settings: Settings, text: str) -> None:
    """post_tweet labels the text and neutralises its mentions (bot.sources.x_text)."""
    from bot.sources.x_api import post_tweet

    post_tweet(settings, text)
