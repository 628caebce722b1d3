"""The generation engine: many users, many models, one device.

Requests are queued per model and served by one worker thread, so torch never runs on the
asyncio event loop. The worker takes the models in turn (round robin) and gathers each
model's compatible requests — same temperature, no seed — for up to
``generation.batch_window_ms`` into one left-padded batch of at most
``generation.max_batch_size`` rows.

Determinism: a request with a seed runs in a batch of its own, sampled from a generator
seeded with it, so the same (model version, prompt, count, temperature, seed) gives the same
tweets whatever else is queued. Unseeded requests share a randomly seeded generator.

Back-pressure: at most ``generation.max_queue`` requests wait; the next fails at once with
:class:`EngineBusyError`. A request whose caller gave up (cancelled task, timeout) leaves the
queue at once and is never generated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from types import TracebackType

import torch

from bot.config import Settings
from bot.errors import (
    EngineBusyError,
    GenerationTimeoutError,
    ModelNotFoundError,
    TweetlikeError,
)
from bot.generation.device import dtype_for, resolve_device
from bot.generation.postprocess import clean_tweet, is_degenerate
from bot.generation.registry import LoadedModel, ModelRegistry
from bot.generation.sampling import RequestOptions, SamplingPlan, sample_batch, validate_options
from bot.handles import check_not_blocked, is_model_name
from bot.model_store import ModelStoreReader, PublishedModel
from bot.rules import MAX_TEMPERATURE, RequestRules

log = logging.getLogger(__name__)

# Sampling rounds per batch before giving up on replacing copied or degenerate tweets.
MAX_ROUNDS = 4
# Each retry round samples this much warmer (relative), up to MAX_TEMPERATURE.
RETRY_WARMING = 0.25
# Fewest new tokens a prompt must leave room for within the model's context.
MIN_ROOM_TOKENS = 8


@dataclass
class GenerationResult:
    tweets: list[str]
    model: PublishedModel


@dataclass(frozen=True)
class EngineStats:
    device: str
    loaded_models: list[str]
    queue_depth: int
    requests_served: int
    batches_run: int


@dataclass(eq=False)
class _Request:
    model: str
    options: RequestOptions
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[GenerationResult] = field(
        default_factory=concurrent.futures.Future
    )

    def fits_with(self, other: _Request) -> bool:
        """Can share a batch (and so a random stream) with ``other``."""
        return (
            self.options.seed is None
            and other.options.seed is None
            and self.options.temperature == other.options.temperature
        )


class GenerationEngine:
    def __init__(self, settings: Settings) -> None:
        self._config = settings.generation
        self._rules = RequestRules.from_settings(settings)
        self._blocked = settings.training.blocked_handles
        self._reader = ModelStoreReader(settings.storage.models_dir)
        self.device = resolve_device(self._config.device)
        self._registry = ModelRegistry(
            self._reader,
            self.device,
            dtype_for(self.device, self._config.dtype),
            self._config.max_loaded_models,
        )
        self._pending: OrderedDict[str, deque[_Request]] = OrderedDict()
        self._depth = 0
        self._served = 0
        self._batches = 0
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; calling it again does nothing."""
        with self._cond:
            if self._closed:
                raise TweetlikeError("the generation engine is shut down")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="tweetlike-generation", daemon=True
                )
                self._worker.start()

    def close(self) -> None:
        """Fail what is still queued, stop the worker and free the models (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            leftovers = [req for queue in self._pending.values() for req in queue]
            self._pending.clear()
            self._depth = 0
            self._cond.notify_all()
            worker = self._worker
        for req in leftovers:
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(TweetlikeError("the generation engine is shutting down"))
        if worker is not None:
            worker.join()
        self._registry.clear()

    def __enter__(self) -> GenerationEngine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # API -------------------------------------------------------------------------------

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        count: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """Tweets for ``prompt`` in the voice of ``model``; cancel the task to withdraw it."""
        limit = timeout if timeout is not None else self._config.request_timeout_seconds
        request = self._submit(model, prompt, count, temperature, seed, limit)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(request.future), limit)
        except TimeoutError:
            raise self._timed_out(limit) from None

    def generate_sync(
        self,
        model: str,
        prompt: str,
        *,
        count: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """Blocking twin of :meth:`generate` for the CLI; never call it on the event loop."""
        limit = timeout if timeout is not None else self._config.request_timeout_seconds
        request = self._submit(model, prompt, count, temperature, seed, limit)
        try:
            return request.future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            request.future.cancel()
            raise self._timed_out(limit) from None

    def stats(self) -> EngineStats:
        with self._cond:
            depth, served, batches = self._depth, self._served, self._batches
        return EngineStats(
            device=str(self.device),
            loaded_models=self._registry.loaded_names(),
            queue_depth=depth,
            requests_served=served,
            batches_run=batches,
        )

    def models(self) -> list[PublishedModel]:
        """Published models that can be served; broken folders are logged and left out."""
        models, broken = self._reader.list()
        for name, reason in broken.items():
            log.warning("model %s is broken and skipped: %s", name, reason)
        return models

    # submission (caller's thread) ------------------------------------------------------

    def _submit(
        self,
        model: str,
        prompt: str,
        count: int,
        temperature: float | None,
        seed: int | None,
        limit: float,
    ) -> _Request:
        name = model.strip().removeprefix("@").lower()
        if not is_model_name(name):
            raise ModelNotFoundError(
                f"'{model}' is not a model name (an X handle, or handles-joined-by-dashes)"
            )
        check_not_blocked(name.split("-"), self._blocked)
        options = validate_options(self._rules, prompt, count, temperature, seed)
        if self._reader.serving_version_path(name) is None:
            raise ModelNotFoundError(
                f"there is no model named '{name}': train it first (tweetlike train {name})"
            )
        self.start()
        request = _Request(model=name, options=options, deadline=time.monotonic() + limit)
        with self._cond:
            if self._closed:
                raise TweetlikeError("the generation engine is shut down")
            if self._depth >= self._config.max_queue:
                raise EngineBusyError(
                    f"the generator is busy ({self._depth} requests waiting); try again shortly"
                )
            self._pending.setdefault(name, deque()).append(request)
            self._depth += 1
            self._cond.notify_all()
        request.future.add_done_callback(lambda _: self._withdraw(request))
        return request

    def _withdraw(self, request: _Request) -> None:
        """Drop a cancelled request from the queue so it is never generated."""
        if not request.future.cancelled():
            return
        with self._cond:
            queue = self._pending.get(request.model)
            if queue is not None and request in queue:
                queue.remove(request)
                self._depth -= 1
                if not queue:
                    del self._pending[request.model]

    def _timed_out(self, limit: float) -> GenerationTimeoutError:
        return GenerationTimeoutError(
            f"generation took longer than {limit:g} s; try again or ask for fewer tweets"
        )

    # worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._serve(batch)

    def _next_batch(self) -> list[_Request] | None:
        """The next model's batch (round robin), after its window; None once closed."""
        window = self._config.batch_window_ms / 1000
        with self._cond:
            while not self._closed and not self._pending:
                self._cond.wait()
            if self._closed:
                return None
            name = next(iter(self._pending))
            first = self._pending[name][0]
            close_at = first.enqueued + window
            while not self._closed and time.monotonic() < close_at:
                queue = self._pending.get(name)
                if not queue or self._batch_rows(queue) >= self._config.max_batch_size:
                    break
                self._cond.wait(close_at - time.monotonic())
            if self._closed:
                return None
            queue = self._pending.pop(name, None)
            if not queue:
                return []
            batch, rest = self._split(queue)
            if rest:
                self._pending[name] = rest  # re-added last: other models go first
            self._depth -= len(queue) - len(rest)
        now = time.monotonic()
        runnable = []
        for req in batch:
            if not req.future.set_running_or_notify_cancel():
                continue
            if now > req.deadline:
                req.future.set_exception(self._timed_out(now - req.enqueued))
                continue
            runnable.append(req)
        return runnable

    def _batch_rows(self, queue: deque[_Request]) -> int:
        first = queue[0]
        return sum(r.options.count for r in queue if r is first or r.fits_with(first))

    def _split(self, queue: deque[_Request]) -> tuple[list[_Request], deque[_Request]]:
        """Requests that go in this batch, and those left for a later one (order kept)."""
        first = queue[0]
        batch = [first]
        rows = first.options.count
        rest: deque[_Request] = deque()
        for req in list(queue)[1:]:
            fits = req.fits_with(first) and rows + req.options.count <= self._config.max_batch_size
            if fits:
                batch.append(req)
                rows += req.options.count
            else:
                rest.append(req)
        return batch, rest

    def _serve(self, batch: list[_Request]) -> None:
        try:
            loaded = self._registry.acquire(batch[0].model)
            batch = [req for req in batch if self._fits_context(req, loaded)]
            if batch:
                self._generate(batch, loaded)
        except TweetlikeError as exc:
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
        except Exception:
            log.exception("generation failed for model %s", batch[0].model)
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(
                        TweetlikeError("generation failed unexpectedly; the error is logged")
                    )

    def _fits_context(self, req: _Request, loaded: LoadedModel) -> bool:
        tokens = len(loaded.prefix_ids) + len(loaded.tokenizer.encode(req.options.prompt))
        if tokens + MIN_ROOM_TOKENS <= loaded.context_size:
            return True
        req.future.set_exception(
            TweetlikeError("the prompt is too long for this model; shorten it")
        )
        return False

    def _generate(self, batch: list[_Request], loaded: LoadedModel) -> None:
        first = batch[0].options
        defaults = loaded.defaults
        prompt_ids = {
            req: loaded.prefix_ids + loaded.tokenizer.encode(req.options.prompt) for req in batch
        }
        longest = max(len(ids) for ids in prompt_ids.values())
        max_new = min(
            defaults.max_new_tokens or self._config.max_new_tokens,
            self._config.max_new_tokens,
            loaded.context_size - longest,
        )
        plan = SamplingPlan(
            do_sample=defaults.do_sample,
            temperature=first.temperature or defaults.temperature,
            top_k=defaults.top_k,
            top_p=defaults.top_p,
            max_new_tokens=max_new,
            min_new_tokens=min(defaults.min_new_tokens, max_new),
            stop_ids=loaded.stop_ids,
            pad_id=loaded.pad_id,
        )
        generator = torch.Generator(device=self.device)
        if first.seed is None:
            generator.seed()
        else:
            generator.manual_seed(first.seed)
        guard = loaded.novelty if self._config.novelty_guard else None
        tweets: dict[_Request, list[str]] = {req: [] for req in batch}
        for round_ in range(MAX_ROUNDS):
            # Whatever made a tweet fail (a peaked, memorised distribution) is likely to recur:
            # retries oversample, and sample a little warmer each round.
            rows = [
                req
                for req in batch
                for _ in range((req.options.count - len(tweets[req])) * (1 if round_ == 0 else 2))
            ]
            if not rows:
                break
            warmer = replace(
                plan,
                temperature=min(
                    max(MAX_TEMPERATURE, plan.temperature),
                    plan.temperature * (1 + RETRY_WARMING * round_),
                ),
            )
            outputs = sample_batch(loaded.model, [prompt_ids[r] for r in rows], warmer, generator)
            for req, new_ids in zip(rows, outputs, strict=True):
                if len(tweets[req]) == req.options.count:
                    continue
                prompt = req.options.prompt
                text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
                tweet = clean_tweet(prompt, text, stop_at_newline=defaults.stop_at_newline)
                if is_degenerate(tweet, prompt):
                    log.debug("model %s: resampling a degenerate output %r", req.model, tweet)
                    continue
                if guard is not None and guard.is_copy(tweet, prompt):
                    log.debug("model %s: discarded a copy of a training tweet", req.model)
                    continue
                tweets[req].append(tweet)
        with self._cond:
            self._served += len(batch)
            self._batches += 1
        for req, found in tweets.items():
            if len(found) == req.options.count:
                req.future.set_result(GenerationResult(tweets=found, model=loaded.published))
            else:
                req.future.set_exception(
                    TweetlikeError(
                        f"the model '{req.model}' produced no usable original tweet for this "
                        "prompt; try another prompt or a higher temperature"
                    )
                )


def generate_once(
    settings: Settings,
    name: str,
    prompt: str,
    *,
    count: int = 1,
    seed: int | None = None,
    temperature: float | None = None,
) -> list[str]:
    """Start an engine, answer one request, shut it down: the CLI's ``generate``."""
    with GenerationEngine(settings) as engine:
        return engine.generate_sync(
            name, prompt, count=count, seed=seed, temperature=temperature
        ).tweets
