"""Retrains: the [retrain] schedule, its new-tweet threshold, fetching first from X."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.x_api import BEARER_TOKEN, FakeXApi
from jobs_support import RecordingNotifier, store_tweets, wait_until
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.core.replies import Requester
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.jobs.retrain import JOB_ID
from bot.sources.store import TweetStore
from bot.sources.x_api import fetch_tweets


@pytest.fixture
async def managers() -> AsyncIterator[list[JobManager]]:
    """Managers a test built; the started ones are stopped, the others just closed."""
    built: list[JobManager] = []
    yield built
    for manager in built:
        if manager.scheduler.running:
            await manager.stop()
        else:
            manager.database.dispose()


def build(settings: Settings, managers: list[JobManager]) -> JobManager:
    """A manager whose queue does not run: retrains are queued, not trained."""
    manager = JobManager(settings, GenerationEngine(settings), RecordingNotifier())
    managers.append(manager)
    return manager


def publish_trained_on(settings: Settings, handle: str) -> None:
    """Publish a model whose card says it was trained on every tweet stored now."""
    texts = [t.text for t in TweetStore(Path(settings.storage.data_dir)).load(handle)]
    publish_tiny_model(settings.storage.models_dir, handle, texts)


@pytest.fixture
def x_settings(make_settings: Callable[..., Settings], fake_x: FakeXApi) -> Callable[..., Settings]:
    def factory(**sections: Any) -> Settings:
        return make_settings(
            x={"bearer_token": BEARER_TOKEN, "api_base_url": fake_x.base_url}, **sections
        )

    return factory


async def test_a_scheduled_retrain_is_queued_only_with_enough_new_tweets(
    make_settings: Callable[..., Settings], managers: list[JobManager]
) -> None:
    settings = make_settings(retrain={"every": "7d", "min_new_tweets": 20})
    store_tweets(settings, "sample", 60)
    publish_trained_on(settings, "sample")
    manager = build(settings, managers)

    store_tweets(settings, "sample", 19, first_id=5000)
    await manager.retrains.run()
    assert manager.jobs() == []

    store_tweets(settings, "sample", 1, first_id=6000)
    await manager.retrains.run()
    [job] = manager.jobs()
    assert (job.kind, job.model, job.state) == ("scheduled_retrain", "sample", "queued")


async def test_a_scheduled_retrain_fetches_an_account_from_x_first(
    x_settings: Callable[..., Settings], fake_x: FakeXApi, managers: list[JobManager]
) -> None:
    settings = x_settings(retrain={"every": "7d", "min_new_tweets": 20})
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 40, prefix="an old thought about")
    fetch_tweets(settings, "alice")
    publish_trained_on(settings, "alice")
    fake_x.add_tweets("alice", 25, prefix="a fresh thought about")
    manager = build(settings, managers)

    await manager.retrains.run()

    assert len(TweetStore(Path(settings.storage.data_dir)).load("alice")) == 65
    [job] = manager.jobs()
    assert (job.kind, job.model, job.state) == ("scheduled_retrain", "alice", "queued")
    record = manager.state.job(job.job_id)
    assert record is not None and record.fetch is False


async def test_a_failed_fetch_is_reported_in_jobs_and_nothing_is_queued(
    x_settings: Callable[..., Settings], fake_x: FakeXApi, managers: list[JobManager]
) -> None:
    settings = x_settings(retrain={"every": "7d", "min_new_tweets": 1})
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 40, prefix="an old thought about")
    fetch_tweets(settings, "alice")
    publish_trained_on(settings, "alice")
    fake_x.fail_next(403, route="user")
    manager = build(settings, managers)

    await manager.retrains.run()

    [job] = manager.jobs()
    assert (job.kind, job.state) == ("scheduled_retrain", "failed")
    assert "fetching new tweets of @alice failed" in job.detail


async def test_retrain_on_request_fetches_only_accounts_that_came_from_x(
    x_settings: Callable[..., Settings], fake_x: FakeXApi, managers: list[JobManager]
) -> None:
    settings = x_settings()
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 10)
    fetch_tweets(settings, "alice")
    store_tweets(settings, "imported", 10)
    manager = build(settings, managers)

    from_x = await manager.request_training(["alice"], reason="retrain")
    imported = await manager.request_training(["imported"], reason="retrain")

    fetches = {}
    for ticket in (from_x, imported):
        record = manager.state.job(ticket.job_id)
        assert record is not None
        fetches[record.model] = record.fetch
    assert fetches == {"alice": True, "imported": False}


async def test_a_retrain_whose_fetch_fails_tells_the_requester_why(
    x_settings: Callable[..., Settings],
    fake_x: FakeXApi,
    managers: list[JobManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = x_settings(training={"epochs": 1})
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 40, prefix="an old thought about")
    fetch_tweets(settings, "alice")
    publish_trained_on(settings, "alice")
    fake_x.fail_next(403, route="user")
    manager = build(settings, managers)
    notifier = manager.notifier
    assert isinstance(notifier, RecordingNotifier)
    await manager.start()

    ticket = await manager.request_training(
        ["alice"], reason="retrain", requester=Requester(user_id=7, channel_id=70)
    )
    await wait_until(lambda: manager.running_count() == 0 and bool(notifier.texts))

    record = manager.state.job(ticket.job_id)
    assert record is not None and record.state == "failed"
    [told] = notifier.texts
    assert (told.channel_id, told.mention_user_id) == (70, 7)
    assert "@alice" in told.text and "previous model keeps serving" in told.text


async def test_the_retrain_schedule_follows_the_config(
    make_settings: Callable[..., Settings], managers: list[JobManager]
) -> None:
    first = build(make_settings(retrain={"every": "7d"}), managers)
    await first.start()
    planned = first.scheduler.get_job(JOB_ID).next_run_time
    await first.stop()

    same = build(make_settings(retrain={"every": "7d"}), managers)
    await same.start()
    assert same.scheduler.get_job(JOB_ID).next_run_time == planned
    await same.stop()

    changed = build(make_settings(retrain={"cron": "0 4 * * 1"}), managers)
    await changed.start()
    assert changed.scheduler.get_job(JOB_ID).name == "retrain cron 0 4 * * 1"
    await changed.stop()

    off = build(make_settings(), managers)
    await off.start()
    assert off.scheduler.get_job(JOB_ID) is None
