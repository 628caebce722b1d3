"""The service core: every command's behaviour, independent of Discord or the console.

Transports call these methods with a :class:`Requester` and show the :mod:`bot.core.replies`
object they get back. Nothing a user types raises out of here: mistakes and refusals come
back as an ephemeral :class:`Notice` that says what to do next.

``/tweetlike`` answers refusals before anything slow happens, so Discord can show them
ephemerally as its first response: :meth:`TweetlikeService.tweetlike` does the cheap checks
(no I/O beyond a few small file lookups), then calls the transport's ``accepted`` hook (where
Discord acknowledges the interaction) and only then generates or queues a training.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bot.config import AutopostSettings, Settings
from bot.core.formatting import handle_label, queue_position
from bot.core.permissions import is_operator
from bot.core.ports import AutopostView, JobControl, TrainingReason
from bot.core.rate_limit import MemberLimits
from bot.core.replies import GeneratedTweets, Notice, QueuedForTraining, Reply, Requester, TextReply
from bot.core.status import status_lines
from bot.errors import EngineBusyError, ModelNotFoundError, TweetlikeError
from bot.handles import check_not_blocked, model_name
from bot.model_store import ModelStoreReader
from bot.ray_cluster import uses_ray
from bot.rules import RequestRules
from bot.sources.availability import check_tweets_available

if TYPE_CHECKING:
    from bot.generation.backends import Generator

AUTOCOMPLETE_LIMIT = 25  # Discord shows at most 25 choices
_HANDLE_SEPARATORS = re.compile(r"[\s,+-]+")


@dataclass(frozen=True)
class GenerationPlan:
    """An accepted /tweetlike request for a published model."""

    model: str
    prompt: str
    count: int
    temperature: float | None
    seed: int | None


@dataclass(frozen=True)
class TrainingPlan:
    """An accepted /tweetlike request for a handle with no model yet (auto-train)."""

    handles: tuple[str, ...]
    model: str
    prompt: str


Plan = GenerationPlan | TrainingPlan
# Called once a request is accepted and before the slow part (Discord defers here).
AcceptedHook = Callable[[Plan], Awaitable[None]]


class TweetlikeService:
    def __init__(
        self,
        settings: Settings,
        engine: Generator,
        jobs: JobControl | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.jobs = jobs
        self.store = ModelStoreReader(settings.storage.models_dir)
        self.rules = RequestRules.from_settings(settings)
        self.limits = MemberLimits.from_settings(settings.discord, clock)
        self._clock = clock
        self._started = clock()

    # ----- /tweetlike -------------------------------------------------------------------

    async def tweetlike(
        self,
        requester: Requester,
        handle: str,
        prompt: str,
        count: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        *,
        accepted: AcceptedHook | None = None,
    ) -> Reply:
        """Tweets in the account's voice, a queued training for a new account, or a refusal.

        The member's request counts against their allowance and is in flight from the moment
        it is accepted until the reply is ready (not until it is shown: a 🔁 pressed as soon
        as the reply appears must find the member free again).
        """
        admission = self._admit(requester, handle, prompt, count, temperature, seed)
        if isinstance(admission, Notice):
            return admission
        exempt = requester.is_console
        with nullcontext() if exempt else self.limits.request(requester.user_id):
            return await self._fulfil(requester, admission, accepted)

    def _admit(
        self,
        requester: Requester,
        handle: str,
        prompt: str,
        count: int,
        temperature: float | None,
        seed: int | None,
    ) -> Plan | Notice:
        """The cheap checks, in the order a member can act on them; no I/O but file lookups."""
        try:
            handles, name = self._parse_model(handle)
            prompt = self.rules.prompt(prompt)
            self.rules.count(count)
            self.rules.temperature(temperature)
            self.rules.seed(seed)
        except TweetlikeError as exc:
            return Notice(str(exc))
        if not requester.is_console and (refusal := self.limits.refusal(requester.user_id)):
            return Notice(refusal)
        if self._published(name):
            if self._engine_full():
                return _busy_notice()
            return GenerationPlan(name, prompt, count, temperature, seed)
        if not self.settings.training.auto_train_new_users or self.jobs is None:
            return Notice(
                f"There is no model for {handle_label(name)} yet; "
                f"an operator can train it with /train {name}."
            )
        try:
            check_tweets_available(self.settings, handles)
        except TweetlikeError as exc:
            return Notice(str(exc))
        return TrainingPlan(tuple(handles), name, prompt)

    async def _fulfil(
        self, requester: Requester, plan: Plan, accepted: AcceptedHook | None
    ) -> Reply:
        if accepted is not None:
            await accepted(plan)
        if isinstance(plan, TrainingPlan):
            return await self._queue_new_user(requester, plan)
        try:
            result = await self.engine.generate(
                plan.model,
                plan.prompt,
                count=plan.count,
                temperature=plan.temperature,
                seed=plan.seed,
                timeout=self.settings.generation.request_timeout_seconds,
            )
        except EngineBusyError:
            self.limits.refund(requester.user_id)
            return _busy_notice()
        except ModelNotFoundError:
            return Notice(
                f"The model for {handle_label(plan.model)} is not available right now; "
                "see /models for the ones that are."
            )
        except TweetlikeError as exc:
            return Notice(str(exc))
        return GeneratedTweets.dressed(
            plan.model,
            plan.prompt,
            result.tweets,
            result.model.metadata,
            seed=plan.seed,
            count=plan.count,
            temperature=plan.temperature,
        )

    def autocomplete_handles(self, prefix: str) -> list[str]:
        """Published model names matching what the user has typed so far, best first."""
        needle = prefix.strip().lstrip("@").lower()
        names = [n for n in self.store.names() if not self._is_blocked(n)]
        starting = [n for n in names if n.startswith(needle)]
        containing = [n for n in names if needle in n and not n.startswith(needle)]
        return (starting + containing)[:AUTOCOMPLETE_LIMIT]

    def models(self) -> TextReply:
        models, broken = self.store.list()
        lines = [
            f"{handle_label(m.name)}: {m.metadata.tweets_kept} tweets, base "
            f"{m.metadata.base_model}, trained {m.metadata.trained_at[:10]}"
            for m in models
            if not self._is_blocked(m.name)
        ]
        lines += [
            f"{name}: unavailable ({reason})"
            for name, reason in broken.items()
            if not self._is_blocked(name)
        ]
        if not lines:
            lines = ["No models yet. An operator can train one with /train <handle>."]
        return TextReply("Published models", lines, ephemeral=True)

    # ----- operator commands ------------------------------------------------------------

    async def train(self, requester: Requester, handle: str) -> Reply:
        """Queue a training; several handles (``a b`` or ``a-b``) make one combined model."""
        return await self._request_training(requester, handle, "train")

    async def retrain(self, requester: Requester, handle: str) -> Reply:
        return await self._request_training(requester, handle, "retrain")

    async def autopost_add(
        self,
        requester: Requester,
        handle: str,
        channel_id: int,
        *,
        every: str | None = None,
        cron: str | None = None,
        prompt: str | None = None,
        post_to_x: bool = False,
    ) -> Reply:
        jobs = self._operator_jobs(requester, "autopost add")
        if isinstance(jobs, Notice):
            return jobs
        try:
            _, name = self._parse_model(handle)
            prompts = [self.rules.prompt(prompt)] if prompt and prompt.strip() else []
            entry = AutopostSettings(
                handle=name,
                channel_id=channel_id,
                every=every or None,
                cron=cron or None,
                prompts=prompts,
                post_to_x=post_to_x,
            )
        except TweetlikeError as exc:
            return Notice(str(exc))
        except ValidationError as exc:
            return Notice(_validation_message(exc))
        if not self._published(name):
            return Notice(
                f"There is no model for {handle_label(name)} yet; train it first with "
                f"/train {name}."
            )
        if post_to_x and not self.settings.x.can_post:
            return Notice(
                "post_to_x needs the X user-context credentials (x.consumer_key, "
                "x.consumer_secret, x.access_token, x.access_token_secret) in the config."
            )
        try:
            view = await jobs.add_autopost(
                entry.handle,
                entry.channel_id,
                every=entry.every,
                cron=entry.cron,
                prompts=entry.prompts,
                post_to_x=entry.post_to_x,
            )
        except TweetlikeError as exc:
            return Notice(str(exc))
        return TextReply(
            f"Auto-post {view.autopost_id} added",
            [_autopost_line(view)],
            ephemeral=True,
        )

    async def autopost_list(self, requester: Requester) -> Reply:
        jobs = self._operator_jobs(requester, "autopost list")
        if isinstance(jobs, Notice):
            return jobs
        lines = [_autopost_line(v) for v in await asyncio.to_thread(jobs.autoposts)]
        return TextReply(
            "Auto-posts", lines or ["None. Add one with /autopost add."], ephemeral=True
        )

    async def autopost_remove(self, requester: Requester, autopost_id: str) -> Reply:
        jobs = self._operator_jobs(requester, "autopost remove")
        if isinstance(jobs, Notice):
            return jobs
        try:
            removed = await jobs.remove_autopost(autopost_id.strip())
        except TweetlikeError as exc:
            return Notice(str(exc))
        if not removed:
            return Notice(f"No auto-post with id '{autopost_id}'; /autopost list shows them.")
        return TextReply(f"Auto-post {autopost_id} removed", ephemeral=True)

    async def jobs_list(self, requester: Requester) -> Reply:
        jobs = self._operator_jobs(requester, "jobs")
        if isinstance(jobs, Notice):
            return jobs
        views = await asyncio.to_thread(jobs.jobs)
        lines = [
            " ".join(
                part
                for part in (j.job_id, j.kind, handle_label(j.model), j.state, j.detail)
                if part
            )
            for j in views
        ]
        return TextReply(
            "Jobs", lines or ["No jobs queued, running or recently finished."], ephemeral=True
        )

    async def cancel(self, requester: Requester, job_id: str) -> Reply:
        jobs = self._operator_jobs(requester, "cancel")
        if isinstance(jobs, Notice):
            return jobs
        if not await jobs.cancel(job_id.strip()):
            return Notice(f"No queued or running job '{job_id}'; /jobs lists them.")
        return TextReply(f"Job {job_id} cancelled", ephemeral=True)

    async def status(self, requester: Requester) -> Reply:
        if refusal := self._operator_refusal(requester, "status"):
            return refusal
        stats = self.engine.stats()
        loaded = ", ".join(handle_label(n) for n in stats.loaded_models) or "none"
        running, deployment = 0, None
        if self.jobs is not None:
            jobs = self.jobs
            running, deployment = await asyncio.to_thread(
                lambda: (jobs.running_count(), jobs.deployment())
            )
        cluster: list[str] = []
        if uses_ray(self.settings):
            from bot.ray_cluster import status_lines as ray_lines

            cluster = await asyncio.to_thread(ray_lines, self.settings, self.engine)
        lines = [
            f"device: {stats.device}",
            f"loaded models: {loaded}",
            f"generation queue: {stats.queue_depth} waiting "
            f"(limit {self.settings.generation.max_queue})",
            f"published models: {len(self.store.names())}",
            f"running jobs: {running}"
            + ("" if self.jobs is not None else " (no job runner in this process)"),
            f"uptime: {_duration(self._clock() - self._started)}",
            *status_lines(self.settings, deployment, cluster=cluster),
        ]
        return TextReply("Status", lines, ephemeral=True)

    # ----- helpers ----------------------------------------------------------------------

    async def _request_training(
        self, requester: Requester, handle: str, reason: TrainingReason
    ) -> Reply:
        jobs = self._operator_jobs(requester, reason)
        if isinstance(jobs, Notice):
            return jobs
        try:
            handles, name = self._parse_model(handle)
        except TweetlikeError as exc:
            return Notice(str(exc))
        if reason == "retrain" and not self._published(name):
            return Notice(f"There is no model for {handle_label(name)} to retrain; use /train.")
        try:
            ticket = await jobs.request_training(handles, reason=reason, requester=requester)
        except TweetlikeError as exc:
            return Notice(str(exc))
        verb = "already queued" if ticket.already_queued else "queued"
        return TextReply(
            f"{reason.capitalize()} of {handle_label(ticket.model)} {verb}",
            [f"job {ticket.job_id}: {queue_position(ticket.position)}"],
            ephemeral=True,
        )

    async def _queue_new_user(self, requester: Requester, plan: TrainingPlan) -> Reply:
        if self.jobs is None:
            return _no_job_runner()
        try:
            ticket = await self.jobs.request_training(
                list(plan.handles), reason="new_user", requester=requester, prompt=plan.prompt
            )
        except TweetlikeError as exc:
            return Notice(str(exc))
        return QueuedForTraining(
            model=ticket.model,
            job_id=ticket.job_id,
            position=ticket.position,
            already_queued=ticket.already_queued,
            prompt=plan.prompt,
        )

    def _parse_model(self, text: str) -> tuple[list[str], str]:
        """Handles and model name from ``@Foo``, ``foo-bar`` or ``foo bar``; refuses opt-outs."""
        parts = [p for p in _HANDLE_SEPARATORS.split(text.strip()) if p]
        name = model_name(parts or [text])
        handles = name.split("-")
        check_not_blocked(handles, self.settings.training.blocked_handles)
        return handles, name

    def _is_blocked(self, name: str) -> bool:
        try:
            check_not_blocked(name.split("-"), self.settings.training.blocked_handles)
        except TweetlikeError:
            return True
        return False

    def _published(self, name: str) -> bool:
        return self.store.serving_version_path(name) is not None

    def _engine_full(self) -> bool:
        return self.engine.stats().queue_depth >= self.settings.generation.max_queue

    def _operator_jobs(self, requester: Requester, command: str) -> JobControl | Notice:
        """The job runner for an operator command, or the notice that refuses it."""
        if refusal := self._operator_refusal(requester, command):
            return refusal
        return self.jobs if self.jobs is not None else _no_job_runner()

    def _operator_refusal(self, requester: Requester, command: str) -> Notice | None:
        if is_operator(requester, self.settings.discord):
            return None
        return Notice(
            f"/{command} is for operators only. Ask whoever hosts this bot; they can add "
            "you to discord.operator_ids or discord.operator_role_ids."
        )


def _busy_notice() -> Notice:
    return Notice("The bot is busy generating for others; try again in a few seconds.")


def _no_job_runner() -> Notice:
    return Notice(
        "The job runner is not running in this process, so there is no training queue or "
        "schedule here; train from a shell with `tweetlike train <handle>`."
    )


def _autopost_line(view: AutopostView) -> str:
    prompts = ", ".join(f'"{p}"' for p in view.prompts) or "free generation"
    parts = [
        f"{view.autopost_id}: {handle_label(view.model)} to channel {view.channel_id}",
        view.trigger,
        prompts,
    ]
    if view.post_to_x:
        parts.append("also to X")
    if view.from_config:
        parts.append("from config")
    if view.next_run:
        parts.append(f"next {view.next_run}")
    if view.last_error:
        parts.append(f"last error: {view.last_error}")
    return " · ".join(parts)


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s"
