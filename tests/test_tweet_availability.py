"""Whether an account's tweets can be had (stored, or downloadable with x.bearer_token): one
rule, used by the service core before it promises a training and by the job queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from jobs_support import RecordingNotifier, store_tweets

from bot.config import Settings
from bot.core.replies import Notice, Requester
from bot.core.service import TweetlikeService
from bot.errors import DataError
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.sources.availability import without_tweets

OPERATOR = Requester(user_id=0, is_console=True)


def test_stored_tweets_or_an_x_token_make_a_handle_trainable(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    store_tweets(settings, "imported", 3)
    assert without_tweets(settings, ["imported", "@NoData"]) == ["nodata"]
    assert without_tweets(make_settings(x={"bearer_token": "t"}), ["nodata"]) == []


@pytest.fixture
async def engine(make_settings: Callable[..., Settings]) -> AsyncIterator[GenerationEngine]:
    with GenerationEngine(make_settings()) as started:
        yield started


@pytest.fixture
async def manager(
    make_settings: Callable[..., Settings], engine: GenerationEngine
) -> AsyncIterator[JobManager]:
    started = JobManager(make_settings(), engine, RecordingNotifier())
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.mark.parametrize("reason", ["new_user", "train"])
async def test_the_job_queue_refuses_a_handle_with_no_possible_tweets(
    manager: JobManager, reason
) -> None:
    with pytest.raises(DataError, match="`tweetlike import nosuchuser PATH`"):
        await manager.request_training(["nosuchuser"], reason=reason)
    assert manager.jobs() == []


async def test_train_of_a_handle_with_no_possible_tweets_is_refused_with_how_to_get_some(
    manager: JobManager, engine: GenerationEngine
) -> None:
    service = TweetlikeService(manager.settings, engine, manager)
    reply = await service.train(OPERATOR, "nosuchuser")
    assert isinstance(reply, Notice) and reply.ephemeral
    assert "no tweets for @nosuchuser" in reply.text and "x.bearer_token" in reply.text
    assert manager.jobs() == []
