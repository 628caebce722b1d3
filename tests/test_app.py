"""The assembled service (`bot.app.serve`): engine, job runner and Discord started together."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from fakes.discord import FakeDiscord
from jobs_support import RecordingNotifier, wait_until
from model_factory import publish_tiny_model
from sqlalchemy import update

from bot.app import serve
from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.jobs.autopost import JOB_PREFIX
from bot.jobs.leader_lease import LeaderLease
from bot.jobs.manager import JobManager
from bot.jobs.scheduler import JOBSTORE_TABLE
from bot.jobs.state import database_now, leases_table, open_database


async def _create_schedule_then_go_down(settings: Settings, autopost_id: str) -> None:
    """One earlier run of the bot created the schedule; it was then down past its due time."""
    with GenerationEngine(settings) as engine:
        manager = JobManager(settings, engine, RecordingNotifier())
        await manager.start()
        await manager.stop()
    store = SQLAlchemyJobStore(url=settings.storage.database_url, tablename=JOBSTORE_TABLE)
    store.start(None, "default")
    job = store.lookup_job(JOB_PREFIX + autopost_id)
    job.next_run_time = datetime.now(UTC) - timedelta(minutes=10)
    store.update_job(job)
    store.shutdown()


async def test_an_autopost_due_at_start_up_reaches_discord(
    discord_fake: FakeDiscord, make_settings: Callable[..., Settings]
) -> None:
    guild = discord_fake.add_guild("Tweetlike Test")
    channel = discord_fake.add_channel(guild.id, "general")
    settings = make_settings(
        discord={
            "token": discord_fake.token,
            "api_base_url": discord_fake.api_base_url,
            "guild_ids": [guild.id],
        },
        autopost=[{"handle": "sample", "channel_id": channel.id, "every": "1h", "prompts": ["Up"]}],
    )
    publish_tiny_model(settings.storage.models_dir, "sample")
    await _create_schedule_then_go_down(settings, f"cfg-sample-{channel.id}")

    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, False, stop))
    try:
        # The coalesced run fires as the scheduler starts, before the gateway is up: it
        # must go out over REST rather than fail and wait an hour for the next one.
        posted = await discord_fake.wait_for_message(channel.id, timeout=30, kinds=("create",))
    finally:
        stop.set()
        assert await asyncio.wait_for(service, 20) == 0
    assert posted["embeds"][0]["description"].startswith("Up")


async def test_a_leader_that_loses_its_lease_stops_with_status_1(
    discord_fake: FakeDiscord, make_settings: Callable[..., Settings]
) -> None:
    guild = discord_fake.add_guild("Tweetlike Test")
    settings = make_settings(
        discord={
            "token": discord_fake.token,
            "api_base_url": discord_fake.api_base_url,
            "guild_ids": [guild.id],
        },
        scheduler={"lease_seconds": 3},
    )
    lease = LeaderLease(open_database(settings.storage.database_url), "otherhost:1:aaaaaa", 3)
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, False, stop))
    try:
        await discord_fake.wait_until_ready()
        await wait_until(lambda: lease.holder() is not None)
        with lease.engine.begin() as conn:  # the leader looks dead for a moment: taken over
            conn.execute(update(leases_table).values(heartbeat=database_now(conn) - 10))
        assert lease.try_acquire() is None
        assert await asyncio.wait_for(service, 60) == 1
    finally:
        stop.set()
        lease.engine.dispose()


async def test_the_service_leaves_start_up_objects_out_of_garbage_collections(
    discord_fake: FakeDiscord, make_settings: Callable[..., Settings]
) -> None:
    """The engine collects garbage on its worker thread when it unloads a model; walking
    what torch and transformers leave behind held the interpreter lock (and so the event
    loop) for most of a second each time."""
    settings = make_settings(
        discord={"token": discord_fake.token, "api_base_url": discord_fake.api_base_url}
    )
    before = gc.get_freeze_count()
    # Lists, unlike bare objects, are tracked by the collector, so a freeze counts them.
    left_over = [[] for _ in range(1000)]  # made after the suite's own freeze
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, False, stop))
    try:
        await wait_until(lambda: gc.get_freeze_count() >= before + len(left_over))
    finally:
        stop.set()
        assert await asyncio.wait_for(service, 60) == 0
