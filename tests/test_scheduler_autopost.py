"""Auto-posts through real APScheduler with a SQLite job store, the real engine, a fake X."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    FakeXApi,
)
from jobs_support import RecordingNotifier, wait_until
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.errors import TweetlikeError
from bot.generation.engine import GenerationEngine
from bot.jobs.autopost import JOB_PREFIX
from bot.jobs.manager import JobManager
from bot.jobs.scheduler import JOBSTORE_TABLE
from bot.rules import ELLIPSIS, fit_tweet, weighted_length
from bot.sources.x_text import post_text

CHANNEL = 555


class Bot:
    """Starts and stops job managers on one database, as restarts of one bot would."""

    def __init__(self, make_settings: Callable[..., Settings]) -> None:
        self.make_settings = make_settings
        self.notifier = RecordingNotifier()
        self.running: list[tuple[JobManager, GenerationEngine]] = []

    def settings(self, **sections: Any) -> Settings:
        return self.make_settings(**sections)

    async def start(self, settings: Settings) -> JobManager:
        engine = GenerationEngine(settings)
        engine.start()
        manager = JobManager(settings, engine, self.notifier)
        await manager.start()
        self.running.append((manager, engine))
        return manager

    async def stop(self, manager: JobManager) -> None:
        for pair in list(self.running):
            if pair[0] is manager:
                await manager.stop()
                pair[1].close()
                self.running.remove(pair)


@pytest.fixture
async def bot(make_settings: Callable[..., Settings]) -> AsyncIterator[Bot]:
    publish_tiny_model(make_settings().storage.models_dir, "sample")
    started = Bot(make_settings)
    yield started
    for manager, _ in list(started.running):
        await started.stop(manager)


def autopost_jobs(manager: JobManager) -> list[str]:
    return sorted(job.id for job in manager.scheduler.get_jobs() if job.id.startswith(JOB_PREFIX))


def entry(channel_id: int, **trigger: str) -> dict[str, Any]:
    return {
        "handle": "sample",
        "channel_id": str(channel_id),
        "prompts": ["My dream is"],
        **trigger,
    }


async def test_a_schedule_every_second_posts_to_the_channel_and_to_x(
    bot: Bot, fake_x: FakeXApi
) -> None:
    settings = bot.settings(
        x={
            "api_base_url": fake_x.base_url,
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
            "access_token": ACCESS_TOKEN,
            "access_token_secret": ACCESS_TOKEN_SECRET,
        }
    )
    manager = await bot.start(settings)

    view = await manager.add_autopost(
        "sample", CHANNEL, every="1s", cron=None, prompts=["My dream is"], post_to_x=True
    )
    await wait_until(lambda: bool(fake_x.posted))

    posted = bot.notifier.tweets[0]
    assert (posted.channel_id, posted.mention_user_id) == (CHANNEL, None)
    assert posted.tweets.tweets[0].startswith("My dream is")
    on_x = fake_x.posted[0]
    assert on_x.text == post_text(posted.tweets.tweets[0], settings.x.post_label)
    assert on_x.text.endswith("\n\n🤖 AI-generated") and on_x.mentions == []
    assert [v.last_error for v in manager.autoposts()] == [None]
    assert view.trigger == "every 1s"


async def test_a_post_x_refuses_is_recorded_without_the_credentials_x_echoed(
    bot: Bot, fake_x: FakeXApi
) -> None:
    fake_x.echo_authorization = True
    secrets = {
        "consumer_key": "wrong-consumer-key",
        "consumer_secret": CONSUMER_SECRET,
        "access_token": ACCESS_TOKEN,
        "access_token_secret": ACCESS_TOKEN_SECRET,
    }
    manager = await bot.start(bot.settings(x={"api_base_url": fake_x.base_url, **secrets}))

    await manager.add_autopost(
        "sample", CHANNEL, every="1s", cron=None, prompts=["My dream is"], post_to_x=True
    )
    await wait_until(lambda: any(v.last_error for v in manager.autoposts()))

    [view] = manager.autoposts()
    assert "posting to X failed" in (view.last_error or "") and "[redacted]" in view.last_error
    assert not any(secret in view.last_error for secret in secrets.values())
    assert fake_x.posted == []


async def test_a_failed_post_is_reported_in_jobs_and_the_scheduler_keeps_running(
    bot: Bot,
) -> None:
    bot.notifier.failing_channels.add(666)
    manager = await bot.start(bot.settings())
    broken = await manager.add_autopost(
        "sample", 666, every="1s", cron=None, prompts=[], post_to_x=False
    )
    await manager.add_autopost(
        "sample", CHANNEL, every="1s", cron=None, prompts=[], post_to_x=False
    )

    await wait_until(lambda: any(v.last_error for v in manager.autoposts()))
    await wait_until(lambda: len(bot.notifier.tweets) >= 2)

    failures = [v for v in manager.jobs() if v.kind == "autopost"]
    assert [(v.job_id, v.state) for v in failures] == [(broken.autopost_id, "failed")]
    assert "Missing Access" in failures[0].detail
    assert {p.channel_id for p in bot.notifier.tweets} == {CHANNEL}


async def test_schedules_survive_a_restart_and_fire(bot: Bot) -> None:
    settings = bot.settings()
    first = await bot.start(settings)
    added = await first.add_autopost(
        "sample", CHANNEL, every="1s", cron=None, prompts=["Coffee is"], post_to_x=False
    )
    await bot.stop(first)
    bot.notifier.tweets.clear()

    second = await bot.start(settings)

    assert [v.autopost_id for v in second.autoposts()] == [added.autopost_id]
    await wait_until(lambda: bool(bot.notifier.tweets))
    assert bot.notifier.tweets[0].tweets.prompt == "Coffee is"


async def test_missed_runs_coalesce_into_one_post(bot: Bot) -> None:
    settings = bot.settings()
    first = await bot.start(settings)
    added = await first.add_autopost(
        "sample", CHANNEL, every="1m", cron=None, prompts=[], post_to_x=False
    )
    await bot.stop(first)
    # The bot "was down" for five minutes: move the stored next run time back.
    store = SQLAlchemyJobStore(url=settings.storage.database_url, tablename=JOBSTORE_TABLE)
    store.start(None, "default")
    job = store.lookup_job(JOB_PREFIX + added.autopost_id)
    job.next_run_time = datetime.now(UTC) - timedelta(minutes=5, seconds=1)
    store.update_job(job)
    store.shutdown()

    second = await bot.start(settings)
    await wait_until(lambda: bool(bot.notifier.tweets))
    await asyncio.sleep(1.0)

    assert len(bot.notifier.tweets) == 1
    job = second.scheduler.get_job(JOB_PREFIX + added.autopost_id)
    assert job is not None and job.next_run_time > datetime.now(UTC)


async def test_config_schedules_are_added_and_updated_without_duplicates(bot: Bot) -> None:
    first = await bot.start(
        bot.settings(autopost=[entry(1, every="1h"), entry(2, cron="0 9 * * *")])
    )
    kept_next_run = first.scheduler.get_job(JOB_PREFIX + "cfg-sample-1").next_run_time
    await bot.stop(first)

    second = await bot.start(
        bot.settings(
            autopost=[entry(1, every="1h"), entry(2, every="2h"), entry(3, cron="30 8 * * 1")]
        )
    )

    views = {v.autopost_id: v for v in second.autoposts()}
    assert sorted(views) == ["cfg-sample-1", "cfg-sample-2", "cfg-sample-3"]
    assert views["cfg-sample-2"].trigger == "every 2h"
    assert views["cfg-sample-3"].trigger == "cron 30 8 * * 1"
    assert all(v.from_config for v in views.values())
    assert autopost_jobs(second) == [JOB_PREFIX + i for i in sorted(views)]
    assert second.scheduler.get_job(JOB_PREFIX + "cfg-sample-1").next_run_time == kept_next_run


async def test_config_schedules_removed_from_the_file_go_and_runtime_ones_stay(bot: Bot) -> None:
    first = await bot.start(bot.settings(autopost=[entry(1, every="1h"), entry(2, every="1h")]))
    runtime_view = await first.add_autopost(
        "sample", 9, every="1d", cron=None, prompts=[], post_to_x=False
    )
    await bot.stop(first)

    second = await bot.start(bot.settings(autopost=[entry(1, every="1h")]))

    assert sorted(v.autopost_id for v in second.autoposts()) == sorted(
        ["cfg-sample-1", runtime_view.autopost_id]
    )
    assert autopost_jobs(second) == sorted(
        [JOB_PREFIX + "cfg-sample-1", JOB_PREFIX + runtime_view.autopost_id]
    )


async def test_a_config_schedule_cannot_be_removed_at_runtime(bot: Bot) -> None:
    manager = await bot.start(bot.settings(autopost=[entry(1, every="1h")]))

    with pytest.raises(TweetlikeError, match="config file"):
        await manager.remove_autopost("cfg-sample-1")
    assert await manager.remove_autopost("no-such-id") is False


async def test_a_runtime_schedule_is_removed_with_its_job(bot: Bot) -> None:
    manager = await bot.start(bot.settings())
    view = await manager.add_autopost(
        "sample", 9, every="1h", cron=None, prompts=[], post_to_x=False
    )

    assert await manager.remove_autopost(view.autopost_id)
    assert manager.autoposts() == []
    assert autopost_jobs(manager) == []


def test_text_for_x_is_cut_at_a_word_within_280_weighted_characters() -> None:
    text = "My dream is " + "to see the 🌊 ocean " * 30

    fitted = fit_tweet(text, ellipsis=ELLIPSIS)

    assert weighted_length(fitted) <= 280
    assert fitted.endswith("…")
    assert text.startswith(fitted[:-1])
    assert fit_tweet("short and sweet", ellipsis=ELLIPSIS) == "short and sweet"
