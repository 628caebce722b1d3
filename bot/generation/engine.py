"""The generation engine: many users, many models, one device.

Requests are queued per model and served by one worker thread, so torch never runs on the
asyncio event loop. The worker keeps a running batch (:class:`~bot.generation.batch.DecodeBatch`)
per set of weights in memory: one per full fine-tune, and one per base for all the LoRA
models on it, whose rows each carry their own adapter. Requests join their batch at the next
decoding step, rows leave it as soon as their tweet ends, and batches take turns step by
step, so a crowd for one model does not hold up another. An idle worker first waits
``generation.batch_window_ms`` for company for the first request, so that a burst is
prefilled in one pass rather than one request per step.

Determinism: every row samples from its own random numbers, but a row's logits depend
slightly on its batch-mates (see :mod:`bot.generation.batch`), so a request with a seed runs
in a batch of its own: the same (model version, prompt, count, temperature, seed) gives the
same tweets whatever else is running. Its steps interleave with the other batches'.

Retries: a row whose tweet is degenerate or copies a training tweet is replaced by up to two
new rows sampling a little warmer, up to ``MAX_ROUNDS`` rounds; the request is answered as
soon as it has its count, and its remaining rows leave the batch.

Back-pressure: at most ``generation.max_queue`` requests wait to start; the next fails at once
with :class:`EngineBusyError`. Each batch takes at most one batch's worth of rows beyond those
it runs, so the rest wait in the queue, where they count. A request whose caller gave up
(cancelled task, timeout) leaves the queue, or its batch, at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import TracebackType

from bot.config import Settings
from bot.errors import (
    EngineBusyError,
    GenerationTimeoutError,
    ModelNotFoundError,
    TweetlikeError,
)
from bot.generation.batch import DecodeBatch, Row, Runtime
from bot.generation.device import dtype_for, resolve_device, use_int8
from bot.generation.postprocess import clean_tweet, is_degenerate
from bot.generation.registry import LoadedModel, ModelRegistry
from bot.generation.results import EngineStats, GenerationResult, timed_out
from bot.generation.sampling import RequestOptions, RowSampling, validate_options
from bot.handles import check_not_blocked, is_model_name
from bot.model_store import ModelStoreReader, PublishedModel
from bot.rules import MAX_TEMPERATURE, RequestRules

log = logging.getLogger(__name__)

# Sampling rounds per request before giving up on replacing copied or degenerate tweets.
MAX_ROUNDS = 4
# Each retry round samples this much warmer (relative), up to MAX_TEMPERATURE.
RETRY_WARMING = 0.25
# Fewest new tokens a prompt must leave room for within the model's context.
MIN_ROOM_TOKENS = 8
# Decoding steps between reads of the stop flags on a GPU (each read waits for the device);
# on a CPU they are read at every step, where reading costs nothing.
GPU_SYNC_EVERY = 4
_SEED_MIX = 0x9E3779B97F4A7C15


@dataclass(eq=False)
class _Request:
    model: str
    options: RequestOptions
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future[GenerationResult] = field(
        default_factory=concurrent.futures.Future
    )
    # once started
    loaded: LoadedModel | None = None
    prompt_ids: list[int] = field(default_factory=list)
    tweets: list[str] = field(default_factory=list)
    live_rows: int = 0
    rows_made: int = 0


@dataclass(frozen=True)
class _Attempt:
    """What a row is for: a request, in a retry round."""

    request: _Request
    round: int


@dataclass(eq=False)
class _Running:
    batch: DecodeBatch
    isolated: bool  # a seeded request's own batch


class GenerationEngine:
    def __init__(self, settings: Settings) -> None:
        self._config = settings.generation
        self._rules = RequestRules.from_settings(settings)
        self._blocked = settings.training.blocked_handles
        self._reader = ModelStoreReader(settings.storage.models_dir)
        self.device = resolve_device(self._config.device)
        dtype = dtype_for(self.device, self._config.dtype)
        self._int8 = use_int8(self._config.quantize, self.device, dtype)
        self._registry = ModelRegistry(
            self._reader,
            self.device,
            dtype,
            self._config.max_loaded_models,
            self._config.max_loaded_adapters,
            quantize=self._int8,
        )
        self._sync_every = 1 if self.device.type == "cpu" else GPU_SYNC_EVERY
        self._random = random.Random()
        self._pending: OrderedDict[str, deque[_Request]] = OrderedDict()
        self._depth = 0
        self._running: list[_Running] = []
        self._turn = 0
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
        """Fail what is still queued or running, stop the worker and free the models
        (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            leftovers = [req for queue in self._pending.values() for req in queue]
            self._pending.clear()
            self._depth = 0
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join()
        leftovers += [
            attempt.request
            for running in self._running
            for attempt in _attempts(running.batch.all_rows())
        ]
        self._running.clear()
        for req in leftovers:
            _fail(req, TweetlikeError("the generation engine is shutting down"))
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
            rows = sum(running.batch.rows for running in self._running)
        return EngineStats(
            device=str(self.device),
            loaded_models=self._registry.loaded_names(),
            queue_depth=depth,
            requests_served=served,
            batches_run=batches,
            loaded_bases=self._registry.loaded_bases(),
            running_rows=rows,
            quantized=self._int8,
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
        """Drop a cancelled request from the queue so it is never started (a running one
        leaves its batch at the worker's next step)."""
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
        return timed_out(limit)

    # worker thread: admission ------------------------------------------------------------

    def _run(self) -> None:
        while self._wait_for_work():
            self._admit()
            if self._running:
                running = self._running[self._turn % len(self._running)]
                self._turn += 1
                self._step(running)

    def _wait_for_work(self) -> bool:
        """Block while there is nothing to do; an idle worker gives a first request
        ``batch_window_ms`` for company. False once closed."""
        window = self._config.batch_window_ms / 1000
        with self._cond:
            while not self._closed and not self._pending and not self._running:
                self._cond.wait()
            if self._running or self._closed:
                return not self._closed
            first = next(iter(self._pending.values()))[0]
            close_at = first.enqueued + window
            while not self._closed and self._pending and time.monotonic() < close_at:
                rows = sum(r.options.count for q in self._pending.values() for r in q)
                if rows >= self._config.max_batch_size:
                    break
                self._cond.wait(close_at - time.monotonic())
            return not self._closed

    def _admit(self) -> None:
        """Start queued requests, models in turn, while their batches have room."""
        blocked: set[str] = set()
        while True:
            with self._cond:
                names = [n for n in self._pending if n not in blocked]
                if self._closed or not names:
                    return
                name = names[0]
                queue = self._pending.pop(name)
                request = queue.popleft()
                if queue:
                    self._pending[name] = queue  # re-added last: other models go next
            if not self._start(request):
                blocked.add(name)
                with self._cond:
                    self._pending.setdefault(name, deque()).appendleft(request)
                    self._pending.move_to_end(name, last=False)
                continue
            with self._cond:
                self._depth -= 1

    def _start(self, request: _Request) -> bool:
        """Put ``request``'s rows in its batch; False (nothing done) if it has to wait."""
        if request.future.done():
            return True  # withdrawn meanwhile: counts as taken off the queue
        if time.monotonic() > request.deadline:
            _fail(request, self._timed_out(time.monotonic() - request.enqueued))
            return True
        try:
            loaded = self._registry.acquire(request.model)
        except TweetlikeError as exc:
            _fail(request, exc)
            return True
        except Exception:
            log.exception("loading model %s failed", request.model)
            _fail(request, TweetlikeError("generation failed unexpectedly; the error is logged"))
            return True
        running = self._batch_for(loaded.runtime, isolated=request.options.seed is not None)
        if running is None:
            return False
        prompt_ids = loaded.prefix_ids + loaded.tokenizer.encode(request.options.prompt)
        if len(prompt_ids) + MIN_ROOM_TOKENS > loaded.context_size:
            _fail(request, TweetlikeError("the prompt is too long for this model; shorten it"))
            return True
        request.loaded, request.prompt_ids = loaded, prompt_ids
        if running not in self._running:
            self._running.append(running)
            with self._cond:
                self._batches += 1
        running.batch.add(self._rows(request, request.options.count, round_=0))
        return True

    def _batch_for(self, runtime: Runtime, *, isolated: bool) -> _Running | None:
        """The batch a request on ``runtime`` joins, or None while it has no room."""
        capacity = self._config.max_batch_size
        if not isolated:
            for running in self._running:
                if not running.isolated and running.batch.runtime is runtime:
                    return running if running.batch.rows < 2 * capacity else None
        if len(self._running) >= self._config.max_loaded_models:
            return None
        batch = DecodeBatch(runtime, capacity, self._config.max_new_tokens, self._sync_every)
        return _Running(batch, isolated)

    def _rows(self, request: _Request, count: int, round_: int) -> list[Row]:
        loaded = request.loaded
        assert loaded is not None
        defaults = loaded.defaults
        max_new = min(
            defaults.max_new_tokens or self._config.max_new_tokens,
            self._config.max_new_tokens,
            loaded.context_size - len(request.prompt_ids),
        )
        base_temperature = request.options.temperature or defaults.temperature
        # Whatever made a tweet fail (a peaked, memorised distribution) is likely to recur:
        # retries sample a little warmer each round.
        temperature = min(
            max(MAX_TEMPERATURE, base_temperature),
            base_temperature * (1 + RETRY_WARMING * round_),
        )
        sampling = RowSampling(
            do_sample=defaults.do_sample,
            temperature=temperature,
            top_k=defaults.top_k,
            top_p=defaults.top_p,
            min_new_tokens=min(defaults.min_new_tokens, max_new),
            max_new_tokens=max_new,
            stops=loaded.stops,
        )
        rows = []
        for _ in range(count):
            rows.append(
                Row(
                    prompt=request.prompt_ids,
                    sampling=sampling,
                    seed=self._row_seed(request),
                    adapter=loaded.adapter,
                    owner=_Attempt(request, round_),
                )
            )
            request.rows_made += 1
        request.live_rows += count
        return rows

    def _row_seed(self, request: _Request) -> int:
        """A seeded request's rows get seeds derived from it (row by row, retries too)."""
        seed = request.options.seed
        if seed is None:
            return self._random.getrandbits(63)
        return (seed * _SEED_MIX + request.rows_made) % (1 << 63)

    # worker thread: decoding -------------------------------------------------------------

    def _step(self, running: _Running) -> None:
        """One decoding step of ``running``; a failure fails its requests, not the worker."""
        batch = running.batch
        try:
            now = time.monotonic()
            for request in _requests(batch.all_rows()):
                if not request.future.done() and now > request.deadline:
                    _fail(request, self._timed_out(now - request.enqueued))
            batch.discard(lambda row: _attempt(row).request.future.done())
            for row in batch.step() if batch.rows else []:
                self._finish_row(running, row)
        except Exception:
            log.exception("generation failed on %s", batch.runtime.label)
            failure = TweetlikeError("generation failed unexpectedly; the error is logged")
            for request in _requests(batch.all_rows()):
                _fail(request, failure)
            self._running.remove(running)
            return
        if not batch.rows:
            self._running.remove(running)

    def _finish_row(self, running: _Running, row: Row) -> None:
        attempt = _attempt(row)
        request = attempt.request
        request.live_rows -= 1
        if request.future.done():
            return
        loaded = request.loaded
        assert loaded is not None
        prompt = request.options.prompt
        text = loaded.tokenizer.decode(row.tokens, skip_special_tokens=True)
        tweet = clean_tweet(prompt, text, stop_at_newline=loaded.defaults.stop_at_newline)
        guard = loaded.novelty if self._config.novelty_guard else None
        if is_degenerate(tweet, prompt):
            log.debug("model %s: resampling a degenerate output %r", request.model, tweet)
        elif guard is not None and guard.is_copy(tweet, prompt):
            log.debug("model %s: discarded a copy of a training tweet", request.model)
        else:
            request.tweets.append(tweet)
        missing = request.options.count - len(request.tweets)
        if missing == 0:
            running.batch.discard(lambda other: _attempt(other).request is request)
            request.live_rows = 0
            self._complete(request)
            return
        next_round = attempt.round + 1
        if next_round < MAX_ROUNDS:
            extra = min(2, 2 * missing - request.live_rows)
            if extra > 0:
                running.batch.add(self._rows(request, extra, next_round))
        if request.live_rows == 0:
            self._complete(request)

    def _complete(self, request: _Request) -> None:
        loaded = request.loaded
        assert loaded is not None
        with self._cond:
            self._served += 1
        if len(request.tweets) == request.options.count:
            _succeed(request, GenerationResult(tweets=request.tweets, model=loaded.published))
        else:
            _fail(
                request,
                TweetlikeError(
                    f"the model '{request.model}' produced no usable original tweet for this "
                    "prompt; try another prompt or a higher temperature"
                ),
            )


def _attempt(row: Row) -> _Attempt:
    owner = row.owner
    assert isinstance(owner, _Attempt)
    return owner


def _attempts(rows: list[Row]) -> list[_Attempt]:
    return [_attempt(row) for row in rows]


def _requests(rows: list[Row]) -> list[_Request]:
    seen: dict[int, _Request] = {}
    for attempt in _attempts(rows):
        seen.setdefault(id(attempt.request), attempt.request)
    return list(seen.values())


def _succeed(request: _Request, result: GenerationResult) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        request.future.set_result(result)


def _fail(request: _Request, error: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        request.future.set_exception(error)
