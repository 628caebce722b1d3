"""The persistent queue of training requests and the runs that serve it.

Requests for the same model while one is queued or running join that job (everyone who
asked is answered when it ends). Jobs run oldest first, ``training.max_concurrent`` at a
time (one per device by default: two fine-tunings on one GPU only thrash). The database row
is the truth about a job, so a restart finds the queue as it was, and a job that was running
when the bot stopped is re-queued or failed (``training.on_interrupted``) with its leftover
process, if any, killed first.

A run is a subprocess beside the bot or a task on a Ray cluster (``training.runner``,
:mod:`bot.jobs.runners`); the queue treats both alike.

Database statements run off the event loop (``asyncio.to_thread``); a lock keeps each
look-then-write on the queue (joining an active job, starting the next ones) whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.config import Settings
from bot.core.formatting import handle_label
from bot.core.ports import JobView, Notifier, TrainingReason, TrainingTicket
from bot.core.replies import Requester
from bot.errors import TweetlikeError
from bot.generation.backends import Generator
from bot.handles import check_not_blocked, model_name, normalize_handle
from bot.jobs.announce import answer_failure, answer_success
from bot.jobs.progress_message import ProgressRelay, overall_fraction, running_text
from bot.jobs.runner import StopReason, TrainingOutcome, kill_leftover, run_training
from bot.jobs.runners import make_runner
from bot.jobs.state import JobRecord, JobState, PendingAnswer, StateStore, now_iso
from bot.jobs.views import job_views
from bot.model_store import ModelStoreReader
from bot.sources.availability import check_tweets_available
from bot.sources.store import TweetStore
from bot.training.progress import ProgressEvent, TrainingEvent

log = logging.getLogger(__name__)


@dataclass
class _Running:
    record: JobRecord
    requesters: list[PendingAnswer]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: StopReason = "cancelled"
    detail: str = "starting"
    task: asyncio.Task[None] | None = None


class TrainingQueue:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        engine: Generator,
        notifier: Notifier,
        *,
        progress_interval: float,
        stop_grace_seconds: float,
    ) -> None:
        self.settings = settings
        self.state = state
        self.engine = engine
        self.notifier = notifier
        self.progress_interval = progress_interval
        self.stop_grace_seconds = stop_grace_seconds
        self.models = ModelStoreReader(settings.storage.models_dir)
        self.tweets = TweetStore(settings.storage.data_dir)
        self.runner = make_runner(settings)
        self._running: dict[str, _Running] = {}
        self._accepting = False
        self._lock = asyncio.Lock()

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._recover_interrupted()
        self._accepting = True
        await self._fill()

    async def stop(self) -> None:
        """Stop running trainings, leaving them ``interrupted`` for the next start."""
        self._accepting = False
        running = list(self._running.values())
        for job in running:
            job.stop_reason = "shutdown"
            job.stop.set()
        tasks = [job.task for job in running if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.stop_grace_seconds + 5)

    async def _recover_interrupted(self) -> None:
        requeue = self.settings.training.on_interrupted == "requeue"
        for job in await asyncio.to_thread(self.state.jobs_in, "running", "interrupted"):
            if job.pid is not None:
                kill_leftover(job.pid)
            if requeue:
                await asyncio.to_thread(
                    self.state.update_job,
                    job.id,
                    state="queued",
                    pid=None,
                    started_at=None,
                    detail="interrupted by a restart; re-queued",
                )
                text = (
                    f"Training {handle_label(job.model)} was interrupted by a restart; re-queued."
                )
                await self._show_final(job, text)
                log.info("job %s (%s) was interrupted; re-queued", job.id, job.model)
            else:
                reason = "it was interrupted by a restart (training.on_interrupted = fail)"
                await self._finish(job.id, "failed", error=reason)
                await self._show_final(job, f"Training {handle_label(job.model)} failed: {reason}")
                await answer_failure(self.notifier, job.model, job.requesters, reason)

    # -- requests ------------------------------------------------------------------------

    async def request(
        self,
        handles: list[str],
        *,
        reason: TrainingReason,
        requester: Requester | None,
        prompt: str | None,
        fetch: bool | None = None,
    ) -> TrainingTicket:
        names = [normalize_handle(h) for h in handles]
        check_not_blocked(names, self.settings.training.blocked_handles)
        check_tweets_available(self.settings, names)
        model = model_name(names)
        pending = (
            PendingAnswer(requester.user_id, requester.channel_id or 0, prompt)
            if requester is not None
            else None
        )
        async with self._lock:
            existing = await asyncio.to_thread(self.state.active_job_for, model)
            if existing is not None:
                if pending is not None and pending not in existing.requesters:
                    requesters = [*existing.requesters, pending]
                    await asyncio.to_thread(
                        self.state.update_job, existing.id, requesters=requesters
                    )
                    if existing.id in self._running:
                        self._running[existing.id].requesters.append(pending)
                return TrainingTicket(existing.id, model, await self._position(existing.id), True)
            job = await asyncio.to_thread(
                self.state.add_job,
                kind=reason,
                model=model,
                handles=sorted(set(names)),
                fetch=self._should_fetch(names, reason) if fetch is None else fetch,
                requesters=[pending] if pending else [],
            )
        log.info("queued %s training of %s (job %s)", reason, model, job.id)
        await self._fill()
        return TrainingTicket(job.id, model, await self._position(job.id), False)

    def _should_fetch(self, handles: list[str], reason: TrainingReason) -> bool:
        """Fetch from X when it is configured, except for accounts only ever imported."""
        if not self.settings.x.can_read and reason in ("new_user", "train"):
            return False
        for handle in handles:
            account = self.tweets.account(handle)
            if account is None or "x" in account.sources:
                return True
        return False

    async def _position(self, job_id: str) -> int:
        if job_id in self._running:
            return 0
        queued = [job.id for job in await asyncio.to_thread(self.state.jobs_in, "queued")]
        return queued.index(job_id) + 1 if job_id in queued else 0

    async def cancel(self, job_id: str) -> bool:
        running = self._running.get(job_id)
        if running is not None:
            running.stop_reason = "cancelled"
            running.stop.set()
            if running.task is not None:
                await asyncio.shield(running.task)
            return True
        async with self._lock:  # not started by _fill meanwhile
            job = await asyncio.to_thread(self.state.job, job_id)
            if job is None or job.state != "queued":
                return False
            await self._finish(job.id, "cancelled", detail="cancelled by an operator")
        text = f"Training {handle_label(job.model)} was cancelled by an operator."
        await self._show_final(job, text)
        await answer_failure(self.notifier, job.model, job.requesters, "cancelled by an operator")
        return True

    # -- views ---------------------------------------------------------------------------

    def running_count(self) -> int:
        return len(self._running)

    def views(self) -> list[JobView]:
        """What /jobs shows, with the live progress of the trainings running here."""
        live = {job_id: running.detail for job_id, running in list(self._running.items())}
        return job_views(self.state, live)

    # -- running -------------------------------------------------------------------------

    async def _fill(self) -> None:
        """Start queued jobs, oldest first, while there is room."""
        async with self._lock:
            if not self._accepting:
                return
            for job in await asyncio.to_thread(self.state.jobs_in, "queued"):
                if len(self._running) >= self.settings.training.max_concurrent:
                    return
                if job.id in self._running:
                    continue
                await asyncio.to_thread(
                    self.state.update_job, job.id, state="running", started_at=now_iso(), detail=""
                )
                running = _Running(record=job, requesters=list(job.requesters))
                self._running[job.id] = running
                running.task = asyncio.create_task(self._run(running), name=f"training-{job.id}")

    async def _run(self, job: _Running) -> None:
        record = job.record
        relay = ProgressRelay(
            self.notifier,
            record.id,
            record.progress_messages,
            lambda ids: asyncio.to_thread(self.state.update_job, record.id, progress_messages=ids),
            interval=self.progress_interval,
        )

        def channels() -> list[int]:
            return [person.channel_id for person in job.requesters]

        try:
            await relay.update(channels(), running_text(record.model, record.id, "prepare", 0.0))
            outcome = await self._run_process(job, relay, channels)
            await self._conclude(job, relay, channels(), outcome)
        except Exception:
            log.exception("training job %s crashed the runner", record.id)
            await self._finish(record.id, "failed", error="internal error in the job runner")
        finally:
            relay.close()  # a shutdown ends with no final update: no late edit either
            self._running.pop(record.id, None)
            await self._fill()

    async def _run_process(
        self, job: _Running, relay: ProgressRelay, channels: Callable[[], list[int]]
    ) -> TrainingOutcome:
        record = job.record
        try:
            process = await self.runner.start(record)
        except (OSError, TweetlikeError) as exc:
            return TrainingOutcome(succeeded=False, error=f"could not start training: {exc}")
        await asyncio.to_thread(self.state.update_job, record.id, pid=process.pid)

        async def on_event(event: TrainingEvent) -> None:
            if isinstance(event, ProgressEvent):
                detail = f"{event.stage} {overall_fraction(event.stage, event.fraction):.0%}"
                if detail != job.detail:  # stored for /jobs in the other processes
                    job.detail = detail
                    await asyncio.to_thread(self.state.update_job, record.id, detail=detail)
                text = running_text(record.model, record.id, event.stage, event.fraction)
                await relay.update(channels(), text)

        return await run_training(
            process,
            on_event,
            timeout_seconds=self.settings.training.timeout_minutes * 60,
            stop_requested=job.stop,
            stop_reason=lambda: job.stop_reason,
            grace_seconds=self.stop_grace_seconds,
        )

    async def _conclude(
        self, job: _Running, relay: ProgressRelay, channels: list[int], outcome: TrainingOutcome
    ) -> None:
        record = job.record
        label = handle_label(record.model)
        requesters = job.requesters
        if outcome.succeeded:
            await self._finish(record.id, "succeeded", detail=f"version {outcome.version}")
            await relay.update(channels, f"Training {label} done: the model is ready.", final=True)
            await answer_success(
                self.notifier,
                self.engine,
                record.model,
                requesters,
                timeout=self.settings.generation.request_timeout_seconds,
            )
            return
        if outcome.stopped == "shutdown":
            await self._finish(record.id, "interrupted", detail="the bot was shutting down")
            return
        if outcome.stopped == "cancelled":
            await self._finish(record.id, "cancelled", detail="cancelled by an operator")
            await relay.update(channels, f"Training {label} was cancelled.", final=True)
            await answer_failure(
                self.notifier, record.model, requesters, "cancelled by an operator"
            )
            return
        if outcome.stopped == "timeout":
            minutes = self.settings.training.timeout_minutes
            reason = (
                f"it ran longer than training.timeout_minutes ({minutes:g} min) and was stopped"
            )
        else:
            reason = outcome.error or "unknown error"
        await self._finish(record.id, "failed", error=reason)
        if self.models.serving_version_path(record.model) is not None:
            reason = f"{reason.rstrip('.')}. The previous model keeps serving."
        await relay.update(channels, f"Training {label} failed: {reason}", final=True)
        await answer_failure(self.notifier, record.model, requesters, reason)

    async def _finish(
        self, job_id: str, state: JobState, *, detail: str = "", error: str | None = None
    ) -> None:
        await asyncio.to_thread(
            self.state.update_job,
            job_id,
            state=state,
            detail=detail,
            error=error,
            pid=None,
            finished_at=now_iso(),
        )
        log.info("job %s %s%s", job_id, state, f": {error}" if error else "")

    async def _show_final(self, job: JobRecord, text: str) -> None:
        """Edit the job's existing progress messages (a queued job may have none)."""
        for channel_id, message_id in job.progress_messages.items():
            with contextlib.suppress(Exception):
                await self.notifier.post_progress(
                    channel_id, job.id, text, message_id=message_id, finished=True
                )
