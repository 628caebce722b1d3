"""The job runner the service core talks to: implements :class:`bot.core.ports.JobControl`.

It owns the database engine, the APScheduler instance, the training queue, the auto-posts
and the scheduled retrains, and starts and stops them in the order that keeps state
consistent: the scheduler starts paused so config schedules are reconciled before anything
fires, interrupted trainings are recovered before the queue runs, and on shutdown the
training subprocess is stopped (its job left ``interrupted``) before the scheduler goes.
"""

from __future__ import annotations

import asyncio
import logging

from bot.config import Settings
from bot.core.ports import AutopostView, JobView, Notifier, TrainingReason, TrainingTicket
from bot.core.replies import Requester
from bot.jobs import runtime
from bot.jobs.announce import Generator
from bot.jobs.autopost import Autoposts
from bot.jobs.retrain import Retrains
from bot.jobs.scheduler import build_scheduler
from bot.jobs.state import StateStore, open_database
from bot.jobs.training_queue import TrainingQueue

log = logging.getLogger(__name__)

PROGRESS_EDIT_INTERVAL = 2.0
STOP_GRACE_SECONDS = 10.0


class JobManager:
    def __init__(
        self,
        settings: Settings,
        engine: Generator,
        notifier: Notifier,
        *,
        progress_interval: float = PROGRESS_EDIT_INTERVAL,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.database = open_database(settings.storage.database_url)
        self.state = StateStore(self.database)
        self.scheduler = build_scheduler(self.database)
        self.queue = TrainingQueue(
            settings,
            self.state,
            engine,
            notifier,
            progress_interval=progress_interval,
            stop_grace_seconds=stop_grace_seconds,
        )
        self.autopost_jobs = Autoposts(settings, self.state, self.scheduler, engine, notifier)
        self.retrains = Retrains(settings, self.state, self.scheduler, self.queue)

    @property
    def notifier(self) -> Notifier:
        return self.queue.notifier

    @notifier.setter
    def notifier(self, notifier: Notifier) -> None:
        """Transports that connect after the manager is built hand their notifier in here."""
        self.queue.notifier = notifier
        self.autopost_jobs.notifier = notifier

    async def start(self) -> None:
        runtime.register(self)
        self.scheduler.start(paused=True)
        self.autopost_jobs.reconcile(self.settings.autopost)
        self.retrains.reconcile()
        await self.queue.start()
        self.scheduler.resume()
        log.info("job manager started (%d schedules)", len(self.scheduler.get_jobs()))

    async def stop(self) -> None:
        """Stop trainings (left ``interrupted``) and the scheduler; bounded by the stop grace."""
        await self.queue.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop iteration
        runtime.unregister(self)
        self.database.dispose()
        log.info("job manager stopped")

    # -- JobControl ----------------------------------------------------------------------

    async def request_training(
        self,
        handles: list[str],
        *,
        reason: TrainingReason,
        requester: Requester | None = None,
        prompt: str | None = None,
    ) -> TrainingTicket:
        return await self.queue.request(handles, reason=reason, requester=requester, prompt=prompt)

    async def cancel(self, job_id: str) -> bool:
        return await self.queue.cancel(job_id)

    def jobs(self) -> list[JobView]:
        return self.queue.views() + self.autopost_jobs.failures()

    async def add_autopost(
        self,
        model: str,
        channel_id: int,
        *,
        every: str | None,
        cron: str | None,
        prompts: list[str],
        post_to_x: bool,
    ) -> AutopostView:
        return self.autopost_jobs.add(
            model, channel_id, every=every, cron=cron, prompts=prompts, post_to_x=post_to_x
        )

    def autoposts(self) -> list[AutopostView]:
        return self.autopost_jobs.views()

    async def remove_autopost(self, autopost_id: str) -> bool:
        return self.autopost_jobs.remove(autopost_id)

    def running_count(self) -> int:
        return self.queue.running_count()
