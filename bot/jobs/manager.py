"""The scheduler leader's job runner: implements :class:`bot.core.ports.JobControl`.

It owns the database engine, the APScheduler instance, the training queue, the auto-posts
and the scheduled retrains, and starts and stops them in the order that keeps state
consistent: the scheduler lease is taken first (one leader per database; a second is
refused, :mod:`bot.jobs.leader_lease`), the scheduler starts paused so config schedules are
reconciled before anything fires, interrupted trainings are recovered before the queue
runs, requests from the other processes are served once all that is up, and on shutdown
the training subprocess is stopped (its job left ``interrupted``) before the scheduler goes
and the lease is given up.

A leader that loses its lease (it could not renew it for a whole lease, and another process
may have taken over) pauses its scheduler at once and tells ``on_leadership_lost``, which
stops the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.core.ports import (
    AutopostView,
    DeploymentView,
    JobView,
    Notifier,
    TrainingReason,
    TrainingTicket,
)
from bot.core.replies import Requester
from bot.generation.backends import Generator
from bot.jobs import runtime
from bot.jobs.autopost import Autoposts
from bot.jobs.membership import NO_TRANSPORT, Membership, Transport
from bot.jobs.requests import Request, RequestServer, RequestTable, carry_out
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
        transport: Transport = NO_TRANSPORT,
        on_leadership_lost: Callable[[str], None] | None = None,
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
        self.membership = Membership(
            self.database,
            leader=True,
            transport=transport,
            lease_seconds=settings.scheduler.lease_seconds,
        )
        self.requests = RequestServer(
            RequestTable(self.database), self._carry_out, settings.scheduler.poll_seconds
        )
        self.on_leadership_lost = on_leadership_lost

    @property
    def notifier(self) -> Notifier:
        return self.queue.notifier

    @notifier.setter
    def notifier(self, notifier: Notifier) -> None:
        """Transports that connect after the manager is built hand their notifier in here."""
        self.queue.notifier = notifier
        self.autopost_jobs.notifier = notifier

    async def start(self) -> None:
        """Take the lease (or raise LeaderRefusedError), then start everything it guards."""
        try:
            await self.membership.join(self._lose_leadership)
        except BaseException:
            self.database.dispose()
            raise
        runtime.register(self)
        self.scheduler.start(paused=True)
        await asyncio.to_thread(self.autopost_jobs.reconcile, self.settings.autopost)
        await asyncio.to_thread(self.retrains.reconcile)
        await self.queue.start()
        self.scheduler.resume()
        self.requests.start()
        log.info(
            "scheduler leader %s started (%d schedules)",
            self.membership.owner,
            len(self.scheduler.get_jobs()),
        )

    async def stop(self) -> None:
        """Stop trainings (left ``interrupted``) and the scheduler; bounded by the stop grace."""
        await self.requests.stop()
        await self.queue.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop iteration
        runtime.unregister(self)
        await self.membership.leave()
        self.database.dispose()
        log.info("job manager stopped")

    def _lose_leadership(self, reason: str) -> None:
        log.error("%s: this process stops scheduling", reason)
        if self.scheduler.running:
            self.scheduler.pause()
        if self.on_leadership_lost is not None:
            self.on_leadership_lost(reason)

    async def _carry_out(self, request: Request) -> Any:
        return await carry_out(self, request)

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
        return self.queue.views()

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
        return await asyncio.to_thread(
            self.autopost_jobs.add,
            model,
            channel_id,
            every=every,
            cron=cron,
            prompts=prompts,
            post_to_x=post_to_x,
        )

    def autoposts(self) -> list[AutopostView]:
        return self.autopost_jobs.views()

    async def remove_autopost(self, autopost_id: str) -> bool:
        return await asyncio.to_thread(self.autopost_jobs.remove, autopost_id)

    def running_count(self) -> int:
        return self.queue.running_count()

    def deployment(self) -> DeploymentView:
        return self.membership.deployment()
