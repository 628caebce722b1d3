"""An account in ``training.blocked_handles`` is never imitated, whatever is on disk: not from
the console, not by an operator command, not by an auto-post, and listings hide it. The
Discord paths (/tweetlike, Regenerate of an old message, autocomplete, /models) are tested
against the fake Discord in test_discord_bot.py. No refusal for a blocked account suggests
training it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_support import RecordingNotifier, store_tweets, wait_until
from model_factory import publish_tiny_model
from service_doubles import RecordingJobControl

from bot.adapters.console import ConsoleAdapter, ConsoleNotifier
from bot.config import Settings
from bot.core.replies import Notice, Requester, TextReply
from bot.core.service import TweetlikeService
from bot.errors import BlockedHandleError
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager

OPERATOR = Requester(user_id=900, is_console=True)
OPTED_OUT = "opted out"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir where the blocked account was trained before it opted out."""
    models_dir = tmp_path_factory.mktemp("models")
    publish_tiny_model(models_dir, "sample")
    publish_tiny_model(models_dir, "everyone")
    (models_dir / "gone").mkdir()  # a broken folder of another blocked account
    return models_dir


@pytest.fixture
def blocked_settings(make_settings: Callable[..., Settings], published: Path) -> Settings:
    return make_settings(
        storage={"models_dir": str(published)},
        training={"blocked_handles": ["Everyone", "@gone", "nomodel"]},
        x={"bearer_token": "x-token"},  # a source for any handle: only the block refuses
    )


@pytest.fixture
def service(blocked_settings: Settings) -> Iterator[tuple[TweetlikeService, RecordingJobControl]]:
    jobs = RecordingJobControl()
    with GenerationEngine(blocked_settings) as engine:
        yield TweetlikeService(blocked_settings, engine, jobs), jobs


def assert_opt_out(text: str | None) -> None:
    """The opt-out refusal, with no hint to train the account."""
    assert text is not None and OPTED_OUT in text, text
    assert not any(hint in text for hint in ("/train", "tweetlike train", "train it")), text


async def test_the_console_never_serves_a_blocked_model(service) -> None:
    core, _ = service
    adapter = ConsoleAdapter(core, ConsoleNotifier(io.StringIO()))
    assert_opt_out(await adapter.answer("/tweetlike everyone My dream is"))
    assert_opt_out(await adapter.answer("/tweetlike sample-everyone My dream is"))


async def test_a_blocked_handle_without_a_model_is_refused_without_suggesting_training(
    service,
) -> None:
    core, jobs = service
    reply = await core.tweetlike(Requester(user_id=1), "nomodel", "Hi")
    assert isinstance(reply, Notice)
    assert_opt_out(reply.text)
    assert jobs.trainings == []


@pytest.mark.parametrize("command", ["train", "retrain"])
async def test_training_a_blocked_handle_gives_the_opt_out_message(service, command) -> None:
    core, jobs = service
    for handle in ("everyone", "nomodel", "sample everyone"):
        reply = await getattr(core, command)(OPERATOR, handle)
        assert isinstance(reply, Notice)
        assert_opt_out(reply.text)
    assert jobs.trainings == []


async def test_autopost_add_for_a_blocked_handle_gives_the_opt_out_message(service) -> None:
    core, jobs = service
    reply = await core.autopost_add(OPERATOR, "everyone", 5, every="1h")
    assert isinstance(reply, Notice)
    assert_opt_out(reply.text)
    assert jobs.posts == {}


async def test_models_and_autocomplete_hide_blocked_accounts_even_broken_ones(service) -> None:
    core, _ = service
    listing = core.models()
    assert isinstance(listing, TextReply)
    assert [line.split(":")[0] for line in listing.lines] == ["@sample"]
    assert core.autocomplete_handles("") == ["sample"]
    assert core.autocomplete_handles("every") == []


async def test_a_scheduled_post_of_a_blocked_model_fails_with_the_reason_and_posts_nothing(
    make_settings: Callable[..., Settings], published: Path
) -> None:
    settings = make_settings(
        storage={"models_dir": str(published)}, training={"blocked_handles": ["everyone"]}
    )
    notifier = RecordingNotifier()
    with GenerationEngine(settings) as engine:
        manager = JobManager(settings, engine, notifier)
        await manager.start()
        try:
            view = await manager.add_autopost(
                "everyone", 555, every="1s", cron=None, prompts=["Hi"], post_to_x=False
            )
            await wait_until(lambda: any(v.last_error for v in manager.autoposts()), 60)
        finally:
            await manager.stop()
    (failed,) = [v for v in manager.autoposts() if v.autopost_id == view.autopost_id]
    assert failed.last_error is not None and OPTED_OUT in failed.last_error
    assert notifier.tweets == []


async def test_the_job_queue_refuses_to_train_a_blocked_handle_whatever_data_is_stored(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(training={"blocked_handles": ["everyone"]})
    store_tweets(settings, "everyone", 20)
    with GenerationEngine(settings) as engine:
        manager = JobManager(settings, engine, RecordingNotifier())
        await manager.start()
        try:
            with pytest.raises(BlockedHandleError, match=OPTED_OUT):
                await manager.request_training(["everyone"], reason="train")
            assert manager.jobs() == []
        finally:
            await manager.stop()
