"""``tweetlike run``: wire config -> generation engine -> job runner -> transport, then serve.

Shutdown order on SIGINT/SIGTERM matters for "nothing half-written": the transport stops
taking requests and lets those in flight finish (the engine is still up to serve them),
then the job runner stops its training subprocess (the job is left ``interrupted``; the
model store is only ever swapped atomically), and the engine closes last. The grace periods
add up to well under the 20 s a process manager waits before killing.

With ``scheduler.enabled`` (the default) this process leads: it runs the scheduler and the
training queue, and refuses to start if another process already leads on the database.
Otherwise it is a gateway process that hands those requests to the leader through the
database (README: Scaling out). A leader that loses its lease stops, with exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator

from bot.config import Settings
from bot.core.ports import JobControl, Notifier
from bot.core.service import TweetlikeService
from bot.cpu_share import use_serving_threads
from bot.generation.backends import Generator, make_generator
from bot.jobs.membership import NO_TRANSPORT, Transport

log = logging.getLogger(__name__)

IN_FLIGHT_GRACE_SECONDS = 5.0


def run_service(settings: Settings, console: bool = False) -> int:
    """Serve until a signal (or stdin's end, in console mode); the CLI has already checked
    that serving Discord has a token, before this module's heavy imports."""
    for note in settings.discord.deprecation_notes():
        log.warning("%s", note)
    return asyncio.run(_serve_until_signalled(settings, console))


async def _serve_until_signalled(settings: Settings, console: bool) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    return await serve(settings, console, stop)


class LeadershipLost:
    """Set when the leader lost its lease: the service stops, and exits with status 1."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        self.reason = reason
        self.stop.set()


@contextlib.asynccontextmanager
async def running_jobs(
    settings: Settings,
    engine: Generator,
    notifier: Notifier,
    *,
    transport: Transport = NO_TRANSPORT,
    on_leadership_lost: LeadershipLost | None = None,
) -> AsyncIterator[JobControl]:
    """This process's job runner: the leader's (training queue, auto-posts, scheduled
    retrains), or a gateway process's, which hands writes to the leader."""
    from bot.jobs.gateway_jobs import GatewayJobs
    from bot.jobs.manager import JobManager

    runner: JobManager | GatewayJobs
    if settings.scheduler.enabled:
        runner = JobManager(
            settings,
            engine,
            notifier,
            transport=transport,
            on_leadership_lost=on_leadership_lost,
        )
    else:
        runner = GatewayJobs(settings, transport=transport)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def serve(settings: Settings, console: bool, stop: asyncio.Event) -> int:
    """Run the whole service until ``stop`` is set (or stdin ends, in console mode)."""
    use_serving_threads(settings)
    engine = make_generator(settings)
    await asyncio.to_thread(engine.start)  # a Ray backend joins its cluster and deploys
    _freeze_startup_objects()
    service = TweetlikeService(settings, engine)
    lost = LeadershipLost(stop)
    try:
        if console:
            await _serve_console(settings, engine, service, stop, lost)
        else:
            await _serve_discord(settings, engine, service, stop, lost)
    finally:
        await asyncio.to_thread(engine.close)
    if lost.reason is not None:
        log.error("stopped: %s", lost.reason)
        return 1
    log.info("stopped")
    return 0


async def _serve_console(
    settings: Settings,
    engine: Generator,
    service: TweetlikeService,
    stop: asyncio.Event,
    lost: LeadershipLost,
) -> None:
    from bot.adapters.console import ConsoleAdapter, ConsoleNotifier

    notifier = ConsoleNotifier(sys.stdout)
    transport = Transport("console")
    async with running_jobs(
        settings, engine, notifier, transport=transport, on_leadership_lost=lost
    ) as jobs:
        service.jobs = jobs
        await ConsoleAdapter(service, notifier).run(sys.stdin, stop)


async def _serve_discord(
    settings: Settings,
    engine: Generator,
    service: TweetlikeService,
    stop: asyncio.Event,
    lost: LeadershipLost,
) -> None:
    from bot.adapters.discord_bot import TweetlikeBot

    shards = settings.discord.shard_ids
    transport = Transport(
        "discord", None if shards is None else tuple(shards), settings.discord.shard_count
    )
    bot = TweetlikeBot(settings, service)
    async with bot:
        await bot.log_in(settings.discord.token.get_secret_value())
        async with running_jobs(
            settings, engine, bot, transport=transport, on_leadership_lost=lost
        ) as jobs:
            service.jobs = jobs
            await bot.serve(stop, IN_FLIGHT_GRACE_SECONDS)


def _freeze_startup_objects() -> None:
    """Leave what the imports built (over half a million objects: torch, transformers) out of
    every later garbage collection.

    The engine collects garbage when it unloads a model, on its worker thread; walking those
    objects took 0.4 to 0.8 s on a two-core machine, all of it holding the interpreter lock,
    so the event loop (and the Discord heartbeat) stood still meanwhile. Objects made later,
    models included, are collected as before.
    """
    gc.collect()
    gc.freeze()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # platforms without signal support
            loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("%s received: finishing in-flight requests and shutting down", sig.name)
    stop.set()
