"""``tweetlike run``: wire config -> generation engine -> job runner -> transport, then serve.

Shutdown order on SIGINT/SIGTERM matters for "nothing half-written": the transport stops
taking requests and lets those in flight finish (the engine is still up to serve them),
then the job runner stops its training subprocess (the job is left ``interrupted``; the
model store is only ever swapped atomically), and the engine closes last. The grace periods
add up to well under the 20 s a process manager waits before killing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

from bot.config import Settings
from bot.core.ports import JobControl, Notifier
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine

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


@contextlib.asynccontextmanager
async def running_jobs(
    settings: Settings, engine: GenerationEngine, notifier: Notifier
) -> AsyncIterator[JobControl]:
    """The job runner (training queue, auto-posts, scheduled retrains) for this process."""
    from bot.jobs.manager import JobManager

    manager = JobManager(settings, engine, notifier)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def serve(settings: Settings, console: bool, stop: asyncio.Event) -> int:
    """Run the whole service until ``stop`` is set (or stdin ends, in console mode)."""
    engine = GenerationEngine(settings)
    engine.start()
    service = TweetlikeService(settings, engine)
    try:
        if console:
            await _serve_console(settings, engine, service, stop)
        else:
            await _serve_discord(settings, engine, service, stop)
    finally:
        await asyncio.to_thread(engine.close)
    log.info("stopped")
    return 0


async def _serve_console(
    settings: Settings, engine: GenerationEngine, service: TweetlikeService, stop: asyncio.Event
) -> None:
    from bot.adapters.console import ConsoleAdapter, ConsoleNotifier

    notifier = ConsoleNotifier(sys.stdout)
    async with running_jobs(settings, engine, notifier) as jobs:
        service.jobs = jobs
        await ConsoleAdapter(service, notifier).run(sys.stdin, stop)


async def _serve_discord(
    settings: Settings, engine: GenerationEngine, service: TweetlikeService, stop: asyncio.Event
) -> None:
    from bot.adapters.discord_bot import TweetlikeBot

    bot = TweetlikeBot(settings, service)
    async with bot:
        await bot.log_in(settings.discord.token.get_secret_value())
        async with running_jobs(settings, engine, bot) as jobs:
            service.jobs = jobs
            await bot.serve(stop, IN_FLIGHT_GRACE_SECONDS)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # platforms without signal support
            loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("%s received: finishing in-flight requests and shutting down", sig.name)
    stop.set()
