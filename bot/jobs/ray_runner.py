"""``training.runner = "ray"``: a queued training as a Ray task on a worker; the bot's side.

A run (:class:`RayTrainingRun`) goes through the same stages as ``python -m bot train`` and
streams the same events, so the training queue relays, cancels, times out and recovers it
exactly as it does a subprocess (:func:`bot.jobs.runner.run_training`):

1. **fetch** (when the job says so) here, on the bot's host: the tweets land in this host's
   data store, and no X credential ever leaves it;
2. **ship**: the accounts' stored tweets, the configuration without secrets, the recorded
   base and method of a retrain, and the shared ``tiny`` base when an adapter needs it, go
   to the worker through the object store (no shared filesystem);
3. **train** on the worker (:func:`bot.training.remote.train_on_worker`, with
   ``ray.cpus_per_training``, the GPUs and ``ray.training_resources``), whose event lines
   come back through a Ray queue as they are printed;
4. **publish** here: the version folder the worker sends back is unpacked into this store's
   staging area, its adapter pointed at this host's copy of the base, and swapped in
   atomically (:func:`bot.training.publish.publish`). Only then does the run report ``done``.

Stopping (cancel, timeout, shutdown) cancels the task (``ray.cancel``: the worker's training
is interrupted and its workspace removed), then kills the worker after the grace period;
nothing is published. A bot that dies takes its tasks with it (Ray ends the tasks of a
driver that is gone), and its job, left ``running`` in the database, is re-queued at the
next start like any interrupted training.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
from ray.exceptions import RayError, TaskCancelledError
from ray.util.queue import Queue

from bot.base_models import TINY_NAME, base_source, tiny_base_dir
from bot.config import Settings
from bot.errors import TrainingError, TweetlikeError, first_line
from bot.handles import model_name, normalize_handle
from bot.jobs.state import JobRecord
from bot.model_store import METADATA_FILE, BrokenModelError, ModelMetadata, ModelStoreReader
from bot.ray_cluster import connect, shipped_settings, training_needs
from bot.sources.store import TweetStore
from bot.training import publish
from bot.training.progress import (
    BarReporter,
    DoneEvent,
    ErrorEvent,
    JsonReporter,
    ProgressEvent,
    Reporter,
    TrainingEvent,
    WarningEvent,
    parse_event,
)
from bot.training.recipes import Method
from bot.training.remote import (
    END_OF_EVENTS,
    TrainedModel,
    TrainingOrder,
    pack_folder,
    train_on_worker,
    unpack_into,
)

log = logging.getLogger(__name__)

# After the task ends, how long its last event lines may take to arrive.
DRAIN_SECONDS = 5.0
_FAILED = 1


@dataclass(frozen=True)
class TrainingRequest:
    """What to train: a queued job, or ``tweetlike train``'s arguments."""

    label: str  # the job id, for the log
    model: str
    handles: list[str]
    fetch: bool
    base_model: str | None = None  # flags of `tweetlike train`, which win over the
    method: Method | None = None  # recorded recipe
    epochs: int | None = None

    @classmethod
    def of_job(cls, record: JobRecord) -> TrainingRequest:
        return cls(record.id, record.model, list(record.handles), record.fetch)


class RayRunner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self, record: JobRecord) -> RayTrainingRun:
        await asyncio.to_thread(connect, self.settings)
        return RayTrainingRun(self.settings, TrainingRequest.of_job(record))


class RayTrainingRun:
    """One job's training on the cluster, seen as the queue sees a subprocess."""

    pid: int | None = None

    def __init__(self, settings: Settings, request: TrainingRequest) -> None:
        self._settings = settings
        self._request = request
        self._code: int | None = None
        self._reason: str | None = None
        self._started = False
        self._ended = asyncio.Event()
        self._stopping = False
        self._task: ray.ObjectRef[TrainedModel | None] | None = None
        self._task_end: asyncio.Future[TrainedModel | None] | None = None
        self._queue: Queue | None = None

    async def events(self) -> AsyncIterator[TrainingEvent]:
        self._started = True
        try:
            async for event in self._stages():
                yield event
        except RayError as exc:
            self._reason = f"lost the training on the Ray cluster: {first_line(exc)}"
            log.warning("job %s: %s", self._request.label, self._reason)
            self._cancel_task(force=True)
        finally:
            if self._code is None:
                self._code = _FAILED
            if self._queue is not None:
                with contextlib.suppress(Exception):
                    self._queue.shutdown()
            self._ended.set()

    async def wait(self) -> int:
        if self._started:
            await self._ended.wait()
        return self._code if self._code is not None else _FAILED

    async def terminate(self, grace_seconds: float) -> None:
        """Cancel the task (interrupting the training), then kill its worker after the
        grace period. Before the task exists, the run stops at its next stage."""
        self._stopping = True
        if self._task_end is None:
            return
        self._cancel_task(force=False)
        done, _ = await asyncio.wait({self._task_end}, timeout=grace_seconds)
        if not done:
            log.warning(
                "job %s: the Ray training ignored its cancel for %.0fs; killing its worker",
                self._request.label,
                grace_seconds,
            )
            self._cancel_task(force=True)
            await asyncio.wait({self._task_end}, timeout=grace_seconds)

    def failure_reason(self, code: int) -> str:
        return self._reason or f"the training on the Ray cluster failed (status {code})"

    # stages ----------------------------------------------------------------------------

    async def _stages(self) -> AsyncIterator[TrainingEvent]:
        request = self._request
        try:
            if request.fetch:
                async for event in self._fetch():
                    yield event
            order = await asyncio.to_thread(self._order)
        except TweetlikeError as exc:
            yield ErrorEvent(message=str(exc))
            return
        except Exception as exc:
            log.exception("job %s: preparing the Ray training failed", request.label)
            yield ErrorEvent(message=f"could not prepare the training: {exc}")
            return
        if self._stopping:
            return
        self._task = await asyncio.to_thread(self._submit, order)
        self._task_end = asyncio.wrap_future(self._task.future())
        log.info("job %s: training %s on the Ray cluster", request.label, request.model)
        if self._stopping:  # stopped while the task was being submitted
            self._cancel_task(force=False)
        async for line in self._lines():
            event = parse_event(line)
            if event is not None and not isinstance(event, DoneEvent):
                yield event  # the worker's "done" means published there; ours follows
        trained = await self._outcome()
        if trained is None or self._stopping:
            return
        yield ProgressEvent(stage="publish", fraction=1.0, detail="on the bot's host")
        try:
            await asyncio.to_thread(publish_trained, self._settings, trained)
        except Exception as exc:  # a bad archive or folder from the worker, a full disk
            log.exception("job %s: publishing the model from Ray failed", request.label)
            yield ErrorEvent(message=f"publishing the trained model failed: {exc}")
            return
        self._code = 0
        yield DoneEvent(model=trained.name, version=trained.version)

    async def _fetch(self) -> AsyncIterator[TrainingEvent]:
        """New tweets from X into this host's store (the worker gets them shipped)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TrainingEvent | None] = asyncio.Queue()
        handles = self._request.handles

        def report(fraction: float, handle: str) -> None:
            event = ProgressEvent(stage="fetch", fraction=min(1.0, fraction), detail=f"@{handle}")
            loop.call_soon_threadsafe(events.put_nowait, event)

        def fetch_all() -> None:
            from bot.sources.x_api import fetch_tweets

            try:
                for done, handle in enumerate(handles):
                    fetch_tweets(
                        self._settings,
                        handle,
                        on_progress=lambda f, d=done, h=handle: report((d + f) / len(handles), h),
                    )
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        fetching = asyncio.ensure_future(asyncio.to_thread(fetch_all))
        yield ProgressEvent(stage="fetch", fraction=0.0)
        while (event := await events.get()) is not None:
            yield event
        await fetching

    def _order(self) -> TrainingOrder:
        """What the worker needs, read from this host's stores."""
        settings, request = self._settings, self._request
        tweets = TweetStore(settings.storage.data_dir)
        accounts = {
            handle: pack_folder(tweets.folder(handle))
            for handle in request.handles
            if tweets.folder(handle).is_dir()
        }
        recorded_base, recorded_method = _recorded_recipe(settings, request.model)
        base = request.base_model or recorded_base
        method = request.method or recorded_method
        models_dir = Path(settings.storage.models_dir)
        tiny = tiny_base_dir(models_dir)
        shared_tiny = (base or settings.training.base_model) == TINY_NAME and (
            method or settings.training.method
        ) == "lora"
        payload = shipped_settings(settings)
        payload["storage"] = {
            key: value
            for key, value in payload["storage"].items()
            if key not in ("models_dir", "data_dir")  # the worker has its own
        }
        return TrainingOrder(
            settings=payload,
            handles=list(request.handles),
            base_model=base,
            method=method,
            epochs=request.epochs,
            accounts=accounts,
            tiny_base=pack_folder(tiny)
            if shared_tiny and (tiny / "config.json").is_file()
            else None,
        )

    def _submit(self, order: TrainingOrder) -> ray.ObjectRef[TrainedModel | None]:
        needs = training_needs(self._settings)
        self._queue = Queue(actor_options={"num_cpus": 0})
        return train_on_worker.options(
            num_cpus=needs.pop("CPU", 0),
            num_gpus=needs.pop("GPU", 0),
            resources=needs or None,
        ).remote(order, self._queue)

    async def _lines(self) -> AsyncIterator[str]:
        """The worker's event lines until its end marker, or until its task ended without
        one (killed) and nothing more arrived for ``DRAIN_SECONDS``."""
        assert self._queue is not None and self._task_end is not None
        while True:
            line = asyncio.ensure_future(self._queue.get_async())
            await asyncio.wait({line, self._task_end}, return_when=asyncio.FIRST_COMPLETED)
            if not line.done():
                await asyncio.wait({line}, timeout=DRAIN_SECONDS)
                if not line.done():
                    line.cancel()
                    return
            text = line.result()
            if text is END_OF_EVENTS:
                return
            yield text

    async def _outcome(self) -> TrainedModel | None:
        assert self._task_end is not None
        try:
            return await self._task_end
        except TaskCancelledError:
            return None
        except RayError as exc:
            self._reason = f"the Ray worker running the training failed: {first_line(exc)}"
            log.warning("job %s: %s", self._request.label, self._reason)
            return None

    def _cancel_task(self, *, force: bool) -> None:
        if self._task is not None and not (self._task_end and self._task_end.done()):
            with contextlib.suppress(Exception):  # already finished or gone
                ray.cancel(self._task, force=force)


def publish_trained(settings: Settings, trained: TrainedModel) -> Path:
    """Publish a worker's version folder atomically into this host's store."""
    models_dir = Path(settings.storage.models_dir)
    if trained.tiny_base is not None:
        _adopt_tiny_base(models_dir, trained.tiny_base)
    staging = publish.staging_dir(models_dir, trained.name)
    try:
        unpack_into(trained.folder, staging)
        _point_adapter_at_local_base(staging, models_dir)
        return publish.publish(
            models_dir, trained.name, staging, trained.version, settings.storage.keep_versions
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _adopt_tiny_base(models_dir: Path, data: bytes) -> None:
    """Keep the shared tiny base a worker built, unless this store has one already (then
    the adapter's recorded fingerprint tells whether it fits this one)."""
    folder = tiny_base_dir(models_dir)
    if (folder / "config.json").is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    unpacked = Path(tempfile.mkdtemp(prefix=f".{TINY_NAME}-", dir=folder.parent))
    try:
        unpack_into(data, unpacked)
        unpacked.chmod(0o755)
        os.replace(unpacked, folder)
    except OSError:  # another one arrived meanwhile
        shutil.rmtree(unpacked, ignore_errors=True)


def _point_adapter_at_local_base(folder: Path, models_dir: Path) -> None:
    """An adapter names its base by where the worker had it; here it is this host's."""
    metadata = ModelMetadata.model_validate_json((folder / METADATA_FILE).read_bytes())
    if metadata.method != "lora":
        return
    path = folder / "adapter_config.json"
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_source(metadata.base_model, models_dir)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _recorded_recipe(settings: Settings, name: str) -> tuple[str | None, Method | None]:
    """A published model's base and method, which its retrain keeps (the worker has no copy
    of this store to read them from)."""
    try:
        metadata = ModelStoreReader(settings.storage.models_dir).get(name).metadata
    except (FileNotFoundError, BrokenModelError):
        return None, None
    return metadata.base_model, metadata.method


def train_command_on_ray(
    settings: Settings,
    names: list[str],
    *,
    base_model: str | None,
    method: Method | None,
    epochs: int | None,
    progress: Literal["bar", "json"],
    fetch: bool,
) -> int:
    """``tweetlike train`` with ``training.runner = "ray"``: what the local command prints
    (a bar and a summary, or the JSON events), the training done on a worker and the model
    published into this host's store. A training killed with this command (Ctrl-C) dies on
    the cluster too: Ray ends the tasks of a driver that is gone."""
    handles = sorted({normalize_handle(name) for name in names})
    request = TrainingRequest(
        "cli", model_name(handles), handles, fetch, base_model, method, epochs
    )
    if progress == "json":
        return asyncio.run(_report_run(settings, request, JsonReporter(sys.stdout)))
    code = asyncio.run(_report_run(settings, request, BarReporter(sys.stderr)))
    published = ModelStoreReader(settings.storage.models_dir).get(request.model)
    print(
        f"published models/{request.model} (version {published.metadata.version}), "
        "trained on the Ray cluster"
    )
    return code


async def _report_run(settings: Settings, request: TrainingRequest, reporter: Reporter) -> int:
    """Run ``request`` on the cluster, telling ``reporter``. A failure is an ``error`` event
    and status 1 in JSON; for a bar, a TrainingError (the CLI prints it on one line)."""
    failure: str | None = None
    try:
        await asyncio.to_thread(connect, settings)
    except TweetlikeError as exc:
        failure = str(exc)
    else:
        run = RayTrainingRun(settings, request)
        async for event in run.events():
            if isinstance(event, ProgressEvent):
                reporter.progress(event.stage, event.fraction, event.detail)
            elif isinstance(event, WarningEvent):
                reporter.warning(event.message)
            elif isinstance(event, DoneEvent):
                reporter.done(event.model, event.version)
            else:
                failure = event.message
        code = await run.wait()
        if code == 0:
            return 0
        failure = failure or run.failure_reason(code)
    reporter.error(failure)
    if isinstance(reporter, JsonReporter):
        return 1
    raise TrainingError(failure)
