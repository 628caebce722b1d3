"""The job control of a process that does not lead (``scheduler.enabled = false``).

A gateway process serves its shards' users but runs no scheduler and no trainings: what
would change a job or an auto-post goes to the scheduler leader as a request through the
database (:mod:`bot.jobs.requests`), and the leader's answer comes back to the user. What
only reads (``/jobs``, ``/autopost list``, ``/status``) comes straight from the database,
built as the leader builds it (:mod:`bot.jobs.views`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.config import Settings
from bot.core.ports import (
    AutopostView,
    DeploymentView,
    JobView,
    TrainingReason,
    TrainingTicket,
)
from bot.core.replies import Requester
from bot.errors import TweetlikeError
from bot.jobs.membership import NO_TRANSPORT, Membership, Transport
from bot.jobs.requests import (
    Operation,
    RequestClient,
    RequestTable,
    autopost_view_from,
    requester_json,
    ticket_from,
)
from bot.jobs.state import StateStore, open_database
from bot.jobs.views import autopost_views, job_views

log = logging.getLogger(__name__)

# Beyond picking a request up, the leader may wait for a running training to stop (cancel).
ANSWER_SECONDS = 60.0


class GatewayJobs:
    def __init__(self, settings: Settings, *, transport: Transport = NO_TRANSPORT) -> None:
        self.settings = settings
        self.database = open_database(settings.storage.database_url)
        self.state = StateStore(self.database)
        lease_seconds = settings.scheduler.lease_seconds
        self.membership = Membership(
            self.database, leader=False, transport=transport, lease_seconds=lease_seconds
        )
        self.client = RequestClient(
            RequestTable(self.database),
            self.membership.owner,
            pickup_seconds=lease_seconds,
            answer_seconds=lease_seconds + ANSWER_SECONDS,
        )

    async def start(self) -> None:
        await self.membership.join(on_lost=_never_lost)
        log.info(
            "gateway process %s started; the scheduler leader runs jobs and schedules",
            self.membership.owner,
        )

    async def stop(self) -> None:
        await self.membership.leave()
        self.database.dispose()

    async def _ask(self, operation: Operation, arguments: dict[str, Any]) -> Any:
        if await asyncio.to_thread(self.membership.lease.holder) is None:
            raise TweetlikeError(
                "no scheduler leader is running for this database, so nothing can be queued "
                "or scheduled now: start the process that has scheduler.enabled = true, then "
                "try again (tweetlike status shows the processes)"
            )
        return await self.client.ask(operation, arguments)

    # -- JobControl ----------------------------------------------------------------------

    async def request_training(
        self,
        handles: list[str],
        *,
        reason: TrainingReason,
        requester: Requester | None = None,
        prompt: str | None = None,
    ) -> TrainingTicket:
        result = await self._ask(
            "train",
            {
                "handles": list(handles),
                "reason": reason,
                "requester": requester_json(requester),
                "prompt": prompt,
            },
        )
        return ticket_from(result)

    async def cancel(self, job_id: str) -> bool:
        return bool(await self._ask("cancel", {"job_id": job_id}))

    def jobs(self) -> list[JobView]:
        return job_views(self.state)

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
        result = await self._ask(
            "add_autopost",
            {
                "model": model,
                "channel_id": channel_id,
                "every": every,
                "cron": cron,
                "prompts": list(prompts),
                "post_to_x": post_to_x,
            },
        )
        return autopost_view_from(result)

    def autoposts(self) -> list[AutopostView]:
        return autopost_views(self.state)

    async def remove_autopost(self, autopost_id: str) -> bool:
        return bool(await self._ask("remove_autopost", {"autopost_id": autopost_id}))

    def running_count(self) -> int:
        return self.state.running_count()

    def deployment(self) -> DeploymentView:
        return self.membership.deployment()


def _never_lost(reason: str) -> None:
    """A gateway process holds no lease, so it has none to lose."""
