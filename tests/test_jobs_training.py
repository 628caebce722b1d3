"""The training queue: real ``python -m bot train`` subprocesses with the tiny base model."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from jobs_support import (
    RecordingNotifier,
    finished,
    job_state,
    process_alive,
    store_tweets,
    wait_until,
)
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.core.replies import Requester
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.jobs.state import PendingAnswer
from bot.model_store import ModelStoreReader

ALICE = Requester(user_id=111, channel_id=10)
BOB = Requester(user_id=222, channel_id=20)


class Harness:
    """Builds managers on one settings object and stops whatever it started."""

    def __init__(self, make_settings: Callable[..., Settings]) -> None:
        self.make_settings = make_settings
        self.notifier = RecordingNotifier()
        self.managers: list[JobManager] = []
        self.engines: list[GenerationEngine] = []

    def settings(self, **training: Any) -> Settings:
        return self.make_settings(training={"epochs": 1, **training})

    async def manager(self, settings: Settings, progress_interval: float = 0.0) -> JobManager:
        engine = GenerationEngine(settings)
        engine.start()
        self.engines.append(engine)
        manager = JobManager(settings, engine, self.notifier, progress_interval=progress_interval)
        self.managers.append(manager)
        await manager.start()
        return manager

    async def close(self) -> None:
        for manager in self.managers:
            await manager.stop()
        for engine in self.engines:
            engine.close()


@pytest.fixture
async def harness(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    built = Harness(make_settings)
    yield built
    await built.close()


async def test_new_handle_is_trained_and_every_requester_is_answered_with_a_new_message(
    harness: Harness,
) -> None:
    settings = harness.settings()
    store_tweets(settings, "newhandle", 200)
    manager = await harness.manager(settings)

    first = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    second = await manager.request_training(
        ["@NewHandle"], reason="new_user", requester=BOB, prompt="Coffee is"
    )
    await wait_until(finished(manager, first.job_id))

    assert job_state(manager, first.job_id) == "succeeded"
    assert ModelStoreReader(settings.storage.models_dir).get("newhandle").metadata.handles == [
        "newhandle"
    ]
    answers = {(p.channel_id, p.mention_user_id, p.tweets.prompt) for p in harness.notifier.tweets}
    assert answers == {(10, 111, "My dream is"), (20, 222, "Coffee is")}
    for posted in harness.notifier.tweets:
        assert posted.tweets.tweets[0].startswith(posted.tweets.prompt)
    assert second.job_id == first.job_id


async def test_a_second_request_for_the_same_handle_joins_the_queued_job(
    harness: Harness,
) -> None:
    settings = harness.settings(max_concurrent=1)
    store_tweets(settings, "busyhandle", 200)
    store_tweets(settings, "newhandle", 200)
    manager = await harness.manager(settings)
    await manager.request_training(["busyhandle"], reason="train", requester=ALICE)

    first = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    again = await manager.request_training(
        ["newhandle"], reason="new_user", requester=BOB, prompt="Coffee is"
    )

    assert (first.position, first.already_queued) == (1, False)
    assert (again.job_id, again.position, again.already_queued) == (first.job_id, 1, True)
    queued = [view for view in manager.jobs() if view.model == "newhandle"]
    assert len(queued) == 1
    record = manager.state.job(first.job_id)
    assert record is not None
    assert record.requesters == [
        PendingAnswer(111, 10, "My dream is"),
        PendingAnswer(222, 20, "Coffee is"),
    ]


async def test_progress_is_shown_by_editing_one_message_per_channel(harness: Harness) -> None:
    settings = harness.settings()
    store_tweets(settings, "newhandle", 200)
    manager = await harness.manager(settings)

    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(finished(manager, ticket.job_id))

    calls = [c for c in harness.notifier.progress if c.job_id == ticket.job_id]
    assert len(calls) >= 3
    assert calls[0].message_id is None
    assert {c.message_id for c in calls[1:]} == {calls[0].returned_id}
    assert {c.channel_id for c in calls} == {10}
    assert any("fine-tuning" in c.text and "%" in c.text for c in calls)
    assert "ready" in calls[-1].text
    assert [c.finished for c in calls] == [False] * (len(calls) - 1) + [True]


async def test_cancel_terminates_the_subprocess_and_publishes_nothing(harness: Harness) -> None:
    settings = harness.settings(epochs=100)
    store_tweets(settings, "newhandle", 200)
    manager = await harness.manager(settings)
    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(lambda: any("fine-tuning" in c.text for c in harness.notifier.progress))
    record = manager.state.job(ticket.job_id)
    assert record is not None and record.pid is not None

    assert await manager.cancel(ticket.job_id)

    assert job_state(manager, ticket.job_id) == "cancelled"
    assert not process_alive(record.pid)
    assert not (Path(settings.storage.models_dir) / "newhandle").exists()
    assert [t.mention_user_id for t in harness.notifier.texts] == [111]
    assert "cancelled" in harness.notifier.texts[0].text


async def test_failed_training_keeps_the_old_model_serving_and_tells_the_reason(
    harness: Harness,
) -> None:
    settings = harness.settings()
    store_tweets(settings, "newhandle", 200)
    publish_tiny_model(settings.storage.models_dir, "newhandle")  # what an earlier run published
    manager = await harness.manager(settings)
    reader = ModelStoreReader(settings.storage.models_dir)
    serving = reader.serving_version_path("newhandle")
    store_tweets(settings, "tinyhandle", 5)
    (Path(settings.storage.data_dir) / "newhandle").rename(Path(settings.storage.data_dir) / "gone")
    (Path(settings.storage.data_dir) / "tinyhandle").rename(
        Path(settings.storage.data_dir) / "newhandle"
    )

    retrain = await manager.request_training(
        ["newhandle"], reason="retrain", requester=BOB, prompt=None
    )
    await wait_until(finished(manager, retrain.job_id))

    assert job_state(manager, retrain.job_id) == "failed"
    assert reader.serving_version_path("newhandle") == serving
    told = [t for t in harness.notifier.texts if t.mention_user_id == 222]
    assert len(told) == 1
    assert "characters" in told[0].text or "tweets" in told[0].text
    assert "previous model keeps serving" in told[0].text
    failed = [v for v in manager.jobs() if v.job_id == retrain.job_id]
    assert failed[0].state == "failed" and failed[0].detail


async def test_a_training_past_the_timeout_is_stopped_and_reported(harness: Harness) -> None:
    # 0.6 s: shorter than starting Python and torch alone, on the fastest machine.
    settings = harness.settings(epochs=100, timeout_minutes=0.01)
    store_tweets(settings, "newhandle", 200)
    manager = await harness.manager(settings)

    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(finished(manager, ticket.job_id))

    record = manager.state.job(ticket.job_id)
    assert record is not None and record.state == "failed"
    assert record.error is not None and "timeout_minutes" in record.error
    assert not (Path(settings.storage.models_dir) / "newhandle").exists()
    assert "timeout_minutes" in harness.notifier.texts[0].text


async def test_a_training_interrupted_by_a_shutdown_is_requeued_at_the_next_start(
    harness: Harness,
) -> None:
    store_tweets(harness.settings(), "newhandle", 200)
    manager = await harness.manager(harness.settings(epochs=100))
    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(lambda: any("fine-tuning" in c.text for c in harness.notifier.progress))
    record = manager.state.job(ticket.job_id)
    assert record is not None and record.pid is not None

    await manager.stop()

    assert job_state(manager, ticket.job_id) == "interrupted"
    assert not process_alive(record.pid)
    restarted = await harness.manager(harness.settings())
    await wait_until(finished(restarted, ticket.job_id))
    assert job_state(restarted, ticket.job_id) == "succeeded"
    assert [(p.channel_id, p.mention_user_id) for p in harness.notifier.tweets] == [(10, 111)]
    assert any("re-queued" in c.text for c in harness.notifier.progress)


async def test_a_shutdown_leaves_no_progress_update_waiting_to_be_shown(
    harness: Harness,
) -> None:
    store_tweets(harness.settings(), "newhandle", 200)
    # The first state is shown at once; every later one waits for the hour to pass.
    manager = await harness.manager(harness.settings(epochs=100), progress_interval=3600)
    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(
        lambda: any(
            v.detail.startswith("train") for v in manager.jobs() if v.job_id == ticket.job_id
        )
    )

    await manager.stop()

    def waiting_to_be_shown() -> list[asyncio.Task[object]]:
        name = f"progress-{ticket.job_id}"
        return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]

    await wait_until(lambda: not waiting_to_be_shown())
    assert len([c for c in harness.notifier.progress if c.job_id == ticket.job_id]) == 1


async def test_a_leftover_training_is_killed_and_failed_when_so_configured(
    harness: Harness,
) -> None:
    settings = harness.settings(on_interrupted="fail")
    looks_like_training = ["-m", "bot", "train", "x", "--progress", "json"]
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", *looks_like_training],
        start_new_session=True,
    )
    try:
        crashed = JobManager(settings, GenerationEngine(settings), harness.notifier)
        job = crashed.state.add_job(
            kind="new_user",
            model="newhandle",
            handles=["newhandle"],
            fetch=False,
            requesters=[PendingAnswer(111, 10, "My dream is")],
            state="running",
        )
        crashed.state.update_job(job.id, pid=leftover.pid)
        crashed.database.dispose()

        manager = await harness.manager(settings)

        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert job_state(manager, job.id) == "failed"
        assert manager.running_count() == 0
        assert [t.mention_user_id for t in harness.notifier.texts] == [111]
        assert "interrupted" in harness.notifier.texts[0].text
    finally:
        if leftover.poll() is None:
            os.killpg(leftover.pid, signal.SIGKILL)
            leftover.wait()
