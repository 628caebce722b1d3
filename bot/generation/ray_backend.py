"""``generation.backend = "ray"``: the generation engine in Ray Serve replicas.

Each replica (:class:`TweetlikeReplica`) runs one
:class:`~bot.generation.engine.GenerationEngine`, with its worker thread, continuous batching
and model registry, exactly as the local backend does. The bot calls it through a deployment
handle (:class:`RayGenerator`), behind the same interface as the local engine.

**The model store.** Replicas read ``storage.models_dir`` at the same absolute path as the
bot: a shared filesystem, or a copy kept in sync (README: Scaling out). Published versions
never change and the serving link is swapped atomically, so a replica serves a republished
model from its next request on, as the local engine does (hot swap).

**Routing.** Every request carries a multiplexed model id (Serve's model multiplexing): the
account for a full model, ``base:<base>`` for a LoRA adapter, so all the adapters on one base
go to the replicas holding that base and share its batches there. Serve prefers a replica
that already holds the id; each replica keeps at most ``generation.max_loaded_models`` ids,
least recently used first out, the bound its engine's registry keeps on full models and
bases. The loader only records the id: the engine loads weights at the first request.

**Back-pressure.** A replica takes two batches' worth of requests at once
(``max_ongoing_requests``); the rest wait at the caller, at most ``generation.max_queue``
(``max_queued_requests``), and the next is refused by Serve (``BackPressureError``), which is
answered as :class:`~bot.errors.EngineBusyError`, like the local engine's full queue.

**Errors.** A :class:`~bot.errors.TweetlikeError` in a replica comes back as a value and is
raised here again as the same class with the same one-line message (raised there, Serve would
wrap it in a ``RayTaskError`` carrying a remote traceback). A replica that dies while
answering makes Serve retry the request on another replica when it can; otherwise the caller
gets a one-line error. No caller waits past its timeout plus ``TRANSPORT_MARGIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from bot.config import Settings
from bot.errors import EngineBusyError, TweetlikeError, first_line
from bot.generation.results import EngineStats, GenerationResult, timed_out
from bot.handles import is_model_name
from bot.model_store import BrokenModelError, ModelStoreReader
from bot.ray_cluster import (
    connect,
    gpus_or_auto,
    settings_from_payload,
    shipped_settings,
    uses_ray_client,
)

log = logging.getLogger(__name__)

# How long past a request's own timeout the caller waits for the replica's answer (the
# replica's engine enforces the timeout itself; this covers the trip and a replica restart).
TRANSPORT_MARGIN_SECONDS = 5.0
# Replicas report their load this often; /status shows the latest report of each.
STATS_INTERVAL_SECONDS = 2.0
# A replica that has not reported for this long is left out of the stats.
STATS_STALE_SECONDS = 30.0
# Requests sent to one replica at once, in batches of generation.max_batch_size.
ONGOING_BATCHES = 2
# Multiplexed ids remembered per published version (their tweetlike.json is read once).
ROUTES_CACHED = 4096
_LORA_PREFIX = "base:"


@dataclass(frozen=True)
class Refusal:
    """A TweetlikeError raised in a replica, carried back as a value: its class (pickled by
    name) and its message as shown."""

    kind: type[TweetlikeError]
    message: str

    def error(self) -> TweetlikeError:
        error = self.kind.__new__(self.kind)
        Exception.__init__(error, self.message)  # whatever its constructor takes
        return error


@dataclass(frozen=True)
class ReplicaReport:
    """One replica's latest account of itself; /status shows one line per replica."""

    replica: str
    node: str
    pid: int
    stats: EngineStats

    def line(self) -> str:
        stats = self.stats
        return (
            f"replica {self.replica} (node {self.node}, pid {self.pid}): {stats.device}, "
            f"{len(stats.loaded_models)} models and {len(stats.loaded_bases)} bases loaded, "
            f"{stats.queue_depth} waiting, {stats.requests_served} served"
        )


def replica_payload(settings: Settings) -> dict[str, Any]:
    """What a replica's engine reads of the configuration, and nothing else: bot processes
    that differ elsewhere (their shards, their scheduler role) share the same replicas."""
    payload = shipped_settings(settings)
    return {
        "storage": {"models_dir": payload["storage"]["models_dir"]},
        "generation": payload["generation"],
        "training": {"blocked_handles": payload["training"]["blocked_handles"]},
        "discord": {"max_prompt_chars": payload["discord"]["max_prompt_chars"]},
        "ray": {"cpus_per_replica": payload["ray"]["cpus_per_replica"]},
    }


def payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@serve.deployment(name="TweetlikeReplica")
class TweetlikeReplica:
    """One generation engine in a Serve replica (resources and counts set at deploy time)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        import torch

        from bot.generation.engine import GenerationEngine

        generation = payload["generation"]
        # Serve bounds what waits (max_queued_requests); the engine takes all it is sent.
        ongoing = ONGOING_BATCHES * generation["max_batch_size"]
        generation = {**generation, "max_queue": max(generation["max_queue"], ongoing)}
        settings = settings_from_payload({**payload, "generation": generation})
        threads = settings.generation.threads or max(1, int(settings.ray.cpus_per_replica))
        torch.set_num_threads(threads)
        self._digest = payload_digest(payload)
        self._engine = GenerationEngine(settings)
        self._engine.start()
        self._resident = serve.multiplexed(
            max_num_models_per_replica=settings.generation.max_loaded_models
        )(_remember)

    async def generate(
        self,
        model: str,
        prompt: str,
        count: int,
        temperature: float | None,
        seed: int | None,
        timeout: float,
    ) -> GenerationResult | Refusal:
        route = serve.get_multiplexed_model_id()
        if route:
            await self._resident(route)
        try:
            return await self._engine.generate(
                model, prompt, count=count, temperature=temperature, seed=seed, timeout=timeout
            )
        except TweetlikeError as exc:
            return Refusal(type(exc), str(exc))

    def stats(self) -> ReplicaReport:
        replica = serve.get_replica_context().replica_id.unique_id
        node = ray.util.get_node_ip_address()
        return ReplicaReport(replica, node, os.getpid(), self._engine.stats())

    def config_digest(self) -> str:
        return self._digest

    def __del__(self) -> None:
        self._engine.close()


async def _remember(route: str) -> str:
    """Serve's loader for a multiplexed id: the id is all a replica keeps (its engine loads
    the weights at the first request)."""
    return route


class RayGenerator:
    """The bot's side: a deployment handle behind the local engine's interface."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._config = settings.generation
        self._reader = ModelStoreReader(settings.storage.models_dir)
        self._routes: OrderedDict[str, str] = OrderedDict()
        self._handle: DeploymentHandle | None = None
        self._lock = threading.Lock()  # one start at a time
        self._reports_lock = threading.Lock()
        self._reports: dict[str, tuple[float, ReplicaReport]] = {}
        self._in_flight = 0
        self._capacity = settings.ray.replicas * ONGOING_BATCHES * self._config.max_batch_size
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Join the cluster and deploy the replicas unless they already run this config.

        Blocks for seconds (more while new replicas load torch): call it off the event loop.
        """
        with self._lock:
            if self._handle is not None:
                return
            connect(self.settings)
            self._handle = deploy(self.settings)
            self._poll_once(timeout=60)  # /status has figures from the start
            self._poller = threading.Thread(
                target=self._poll_stats, name="tweetlike-ray-stats", daemon=True
            )
            self._poller.start()

    def close(self) -> None:
        """Stop reporting. The replicas keep running for the next start (or the next
        process); a cluster started inside this process ends with it."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        if uses_ray_client(self.settings):
            # The connection ends with this process, and Serve's handle reports the end of
            # its long poll on it as a warning.
            logging.getLogger("ray.serve").setLevel(logging.ERROR)

    def __enter__(self) -> RayGenerator:
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
        """Tweets from a replica; cancelling the task withdraws the request there too."""
        limit = timeout if timeout is not None else self._config.request_timeout_seconds
        response = self._send(model, prompt, count, temperature, seed, limit)
        self._in_flight += 1
        try:
            with _answered_or_withdrawn(response, limit):
                answer = await asyncio.wait_for(
                    _awaited(response), limit + TRANSPORT_MARGIN_SECONDS
                )
        finally:
            self._in_flight -= 1
        return _result(answer)

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
        response = self._send(model, prompt, count, temperature, seed, limit)
        with _answered_or_withdrawn(response, limit):
            answer = response.result(timeout_s=limit + TRANSPORT_MARGIN_SECONDS)
        return _result(answer)

    def replica_reports(self) -> list[ReplicaReport]:
        """The latest report of every replica heard from in ``STATS_STALE_SECONDS``."""
        now = time.monotonic()
        with self._reports_lock:
            return [
                report for at, report in self._reports.values() if now - at < STATS_STALE_SECONDS
            ]

    def stats(self) -> EngineStats:
        """The replicas' latest reports added up, except ``queue_depth``: this process's
        requests waiting for room on a replica, the queue ``generation.max_queue`` bounds
        (what waits inside a replica is its next batch, shown per replica)."""
        fresh = [report.stats for report in self.replica_reports()]
        devices = sorted({s.device for s in fresh}) or ["unknown"]
        waiting_here = max(0, self._in_flight - self._capacity)
        return EngineStats(
            device=f"ray: {len(fresh)} replica{'s' if len(fresh) != 1 else ''} on "
            + ", ".join(devices),
            loaded_models=sorted({name for s in fresh for name in s.loaded_models}),
            queue_depth=waiting_here,
            requests_served=sum(s.requests_served for s in fresh),
            batches_run=sum(s.batches_run for s in fresh),
            loaded_bases=sorted({base for s in fresh for base in s.loaded_bases}),
            running_rows=sum(s.running_rows for s in fresh),
            quantized=any(s.quantized for s in fresh),
        )

    # internals -------------------------------------------------------------------------

    def _send(
        self,
        model: str,
        prompt: str,
        count: int,
        temperature: float | None,
        seed: int | None,
        limit: float,
    ) -> DeploymentResponse[Any]:
        if self._handle is None:
            raise RuntimeError("RayGenerator.start() must run first (off the event loop)")
        handle = self._handle.options(multiplexed_model_id=self.multiplexed_id(model))
        try:
            return handle.generate.remote(model, prompt, count, temperature, seed, limit)
        except Exception as exc:
            raise _transport_error(exc) from None

    def multiplexed_id(self, model: str) -> str:
        """What a request for ``model`` is routed by: the account, or ``base:<base>`` for a
        LoRA adapter; for a name that is not a published model, the name (the replica gives
        the error)."""
        name = model.strip().removeprefix("@").lower()
        if not is_model_name(name):
            return ""
        version = self._reader.serving_version_path(name)
        if version is None:
            return name
        key = str(version)
        route = self._routes.get(key)
        if route is None:
            try:
                metadata = self._reader.get(name).metadata
            except (FileNotFoundError, BrokenModelError):
                return name
            route = _LORA_PREFIX + metadata.base_model if metadata.method == "lora" else name
            self._routes[key] = route
            if len(self._routes) > ROUTES_CACHED:
                self._routes.popitem(last=False)
        return route

    def _poll_stats(self) -> None:
        while not self._stop.wait(STATS_INTERVAL_SECONDS):
            self._poll_once(timeout=STATS_INTERVAL_SECONDS)

    def _poll_once(self, *, timeout: float) -> None:
        assert self._handle is not None
        try:
            report = self._handle.stats.remote().result(timeout_s=timeout)
        except Exception as exc:  # a replica restarting; the next poll tries again
            log.debug("no stats from the generation replicas: %s", exc)
            return
        with self._reports_lock:
            self._reports[report.replica] = (time.monotonic(), report)


def deploy(settings: Settings) -> DeploymentHandle:
    """The handle of the replicas running this configuration, deploying them if needed.

    Redeploying restarts every replica (Serve cannot tell an identical class apart), so a
    running application whose replicas report this configuration's digest is reused.
    Serve's own progress lines stay out of the bot's log (its warnings do not).
    """
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    payload = replica_payload(settings)
    name = settings.ray.app_name
    try:
        handle = serve.get_app_handle(name)
        if handle.config_digest.remote().result(timeout_s=60) == payload_digest(payload):
            log.info("generation replicas of Serve application %s already run this config", name)
            return handle
    except Exception as exc:  # not deployed, or its replicas cannot answer: deploy anew
        log.info("deploying Serve application %s (%s)", name, first_line(exc))
    generation, ray_config = settings.generation, settings.ray
    app = TweetlikeReplica.options(
        num_replicas=ray_config.replicas,
        ray_actor_options={
            "num_cpus": ray_config.cpus_per_replica,
            "num_gpus": gpus_or_auto(ray_config.gpus_per_replica),
        },
        max_ongoing_requests=ONGOING_BATCHES * generation.max_batch_size,
        max_queued_requests=generation.max_queue,
    ).bind(payload)
    try:
        serve.start(proxy_location="Disabled")  # no HTTP: the bot calls through handles
        return serve.run(app, name=name, route_prefix=None)
    except Exception as exc:
        raise TweetlikeError(
            f"the generation replicas (Serve application '{name}') did not start: {first_line(exc)}"
        ) from None


async def _awaited(response: DeploymentResponse[Any]) -> Any:
    return await response


@contextlib.contextmanager
def _answered_or_withdrawn(response: DeploymentResponse[Any], limit: float) -> Iterator[None]:
    """Wait for ``response`` inside: a caller that stops waiting (timeout, cancellation)
    withdraws the request from its replica, and Serve's own failures reach the caller as
    one-line errors."""
    try:
        yield
    except TimeoutError:
        response.cancel()
        raise timed_out(limit) from None
    except asyncio.CancelledError:
        response.cancel()
        raise
    except Exception as exc:
        raise _transport_error(exc) from None


def _result(answer: GenerationResult | Refusal) -> GenerationResult:
    if isinstance(answer, Refusal):
        raise answer.error()
    return answer


def _transport_error(exc: Exception) -> TweetlikeError:
    """What a caller is told when Serve, not the engine, failed the request."""
    if isinstance(exc, TweetlikeError):
        return exc
    if isinstance(exc, BackPressureError):
        return EngineBusyError("the generator is busy (its queue is full); try again shortly")
    if isinstance(exc, RayError | RayServeException):
        log.warning("a generation request failed in Ray: %s", first_line(exc))
        return TweetlikeError(
            "the generation replica failed while answering; try again in a few seconds"
        )
    log.exception("a generation request failed unexpectedly")
    return TweetlikeError("generation failed unexpectedly; the error is logged")
