"""Scheduled retrains (``[retrain]``): refresh each published model when enough is new.

For every published model, accounts whose tweets came from X are fetched first (only tweets
newer than the newest stored one, as ``tweetlike fetch`` does); accounts with imported data
only are judged on what is stored. A retrain is queued when at least
``retrain.min_new_tweets`` tweets are stored beyond those the model was trained on. Counting
by store size rather than by id comparison is what keeps imported tweets, whose synthetic
ids are not time-ordered, working the same way.

A failed fetch is recorded as a failed ``scheduled_retrain`` job (shown in ``/jobs``) and
that model is left as it is; nobody asked, so nobody is pinged.
"""

from __future__ import annotations

import asyncio
import logging

from apscheduler.schedulers.base import BaseScheduler

from bot.config import Settings
from bot.errors import TweetlikeError
from bot.handles import check_not_blocked
from bot.jobs import runtime
from bot.jobs.scheduler import build_trigger, describe_trigger
from bot.jobs.state import StateStore
from bot.jobs.training_queue import TrainingQueue
from bot.model_store import ModelStoreReader, PublishedModel
from bot.sources.store import TweetStore

log = logging.getLogger(__name__)

JOB_ID = "retrain"


async def run_scheduled_retrain() -> None:
    """APScheduler entry point (``bot.jobs.retrain:run_scheduled_retrain``)."""
    await runtime.current().retrains.run()


def _fetch(settings: Settings, handle: str) -> None:
    from bot.sources.x_api import fetch_tweets

    fetch_tweets(settings, handle)


class Retrains:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        scheduler: BaseScheduler,
        queue: TrainingQueue,
    ) -> None:
        self.settings = settings
        self.state = state
        self.scheduler = scheduler
        self.queue = queue
        self.models = ModelStoreReader(settings.storage.models_dir)
        self.tweets = TweetStore(settings.storage.data_dir)

    def reconcile(self) -> None:
        """Add, change or remove the one retrain job to match ``[retrain]``.

        The job's name records its schedule, so an unchanged schedule keeps its next run
        time across restarts instead of being pushed back by a re-add.
        """
        config = self.settings.retrain
        existing = self.scheduler.get_job(JOB_ID)
        if config.every is None and config.cron is None:
            if existing is not None:
                existing.remove()
                log.info("scheduled retrains turned off")
            return
        name = "retrain " + describe_trigger(config.every, config.cron, config.timezone)
        if existing is not None and existing.name == name:
            return
        self.scheduler.add_job(
            run_scheduled_retrain,
            build_trigger(config.every, config.cron, config.timezone),
            id=JOB_ID,
            name=name,
            replace_existing=True,
        )
        log.info("scheduled retrains: %s", name)

    async def run(self) -> None:
        models, broken = self.models.list()
        for name, reason in broken.items():
            log.warning("not retraining %s: %s", name, reason)
        for model in models:
            try:
                await self._consider(model)
            except Exception:
                log.exception("scheduled retrain of %s failed", model.name)

    async def _consider(self, model: PublishedModel) -> None:
        handles = model.metadata.handles or [model.name]
        try:
            check_not_blocked(handles, self.settings.training.blocked_handles)
        except TweetlikeError:
            return
        if await asyncio.to_thread(self.state.active_job_for, model.name) is not None:
            return
        for handle in handles:
            account = self.tweets.account(handle)
            if account is None or "x" not in account.sources:
                continue
            try:
                await asyncio.to_thread(_fetch, self.settings, handle)
            except Exception as exc:
                error = f"fetching new tweets of @{handle} failed: {exc}"
                log.warning("scheduled retrain of %s: %s", model.name, error)
                await asyncio.to_thread(
                    self.state.add_job,
                    kind="scheduled_retrain",
                    model=model.name,
                    handles=handles,
                    fetch=True,
                    requesters=[],
                    state="failed",
                    error=error,
                )
                return
        new = self.new_tweets(model)
        wanted = self.settings.retrain.min_new_tweets
        if new < wanted:
            log.info("%s: %d new tweets, %d needed for a retrain", model.name, new, wanted)
            return
        ticket = await self.queue.request(
            handles, reason="scheduled_retrain", requester=None, prompt=None, fetch=False
        )
        log.info("%s: %d new tweets, retrain queued (job %s)", model.name, new, ticket.job_id)

    def new_tweets(self, model: PublishedModel) -> int:
        """Tweets stored now beyond the ones the model was trained on."""
        meta = model.metadata
        handles = meta.handles or [model.name]
        total = 0
        for handle in handles:
            stats = meta.per_handle.get(handle)
            used = stats.tweets_downloaded if stats else meta.tweets_downloaded
            total += max(0, len(self.tweets.load(handle)) - used)
        return total
