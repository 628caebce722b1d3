"""Interfaces between the service core, the job runner and the transports.

Transports (Discord, console) implement :class:`Notifier` so that scheduled jobs and
finished trainings can post without knowing where they post. The job runner implements
:class:`JobControl` for the core's commands: the scheduler leader's runs them, another
process's hands writes to the leader through the database. Its synchronous methods read the
database, so the core calls them off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bot.core.replies import GeneratedTweets, Requester

TrainingReason = Literal["new_user", "train", "retrain", "scheduled_retrain"]


class Notifier(Protocol):
    async def post_tweets(
        self, channel_id: int, tweets: GeneratedTweets, *, mention_user_id: int | None = None
    ) -> None:
        """Post generated tweets as a new message (not an interaction reply)."""

    async def post_text(
        self, channel_id: int, text: str, *, mention_user_id: int | None = None
    ) -> None:
        """Post a plain message, pinging nobody except ``mention_user_id`` if given."""

    async def post_progress(
        self,
        channel_id: int,
        job_id: str,
        text: str,
        *,
        message_id: int | None,
        finished: bool = False,
    ) -> int | None:
        """Create (message_id None) or edit the one progress message of a job; returns its id.

        ``finished`` marks the last update (done, failed, cancelled): controls such as a
        Cancel button are removed then.
        """


@dataclass(frozen=True)
class TrainingTicket:
    job_id: str
    model: str
    position: int  # 0 = running now, 1 = next, ...
    already_queued: bool


@dataclass(frozen=True)
class JobView:
    job_id: str
    kind: str
    model: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    detail: str = ""
    created_at: str = ""
    finished_at: str | None = None


@dataclass(frozen=True)
class AutopostView:
    autopost_id: str
    model: str
    channel_id: int
    trigger: str
    prompts: tuple[str, ...]
    post_to_x: bool
    from_config: bool
    next_run: str | None
    last_error: str | None = None


@dataclass(frozen=True)
class ProcessView:
    """A serving process that shares this database, as its last heartbeat described it."""

    owner: str  # host:pid:tag
    leader: bool
    transport: str  # "discord", "console" or "none"
    shard_ids: tuple[int, ...] | None  # None: every shard
    shard_count: int | None  # None: as many as Discord recommends
    age: float  # seconds since its heartbeat


@dataclass(frozen=True)
class DeploymentView:
    """Who runs the scheduler and which processes serve which shards (``/status``)."""

    leader: str | None  # the lease holder, None when no live process holds it
    leader_age: float | None
    this_process: str | None  # this process's owner name; None outside a serving process
    processes: tuple[ProcessView, ...]


class JobControl(Protocol):
    async def request_training(
        self,
        handles: list[str],
        *,
        reason: TrainingReason,
        requester: Requester | None = None,
        prompt: str | None = None,
    ) -> TrainingTicket: ...

    async def cancel(self, job_id: str) -> bool: ...

    def jobs(self) -> list[JobView]: ...

    async def add_autopost(
        self,
        model: str,
        channel_id: int,
        *,
        every: str | None,
        cron: str | None,
        prompts: list[str],
        post_to_x: bool,
    ) -> AutopostView: ...

    def autoposts(self) -> list[AutopostView]: ...

    async def remove_autopost(self, autopost_id: str) -> bool: ...

    def running_count(self) -> int: ...

    def deployment(self) -> DeploymentView: ...
