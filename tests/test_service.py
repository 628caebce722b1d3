"""The service core: validation, per-member limits, operator checks and the unknown-handle
paths."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_support import store_tweets
from model_factory import publish_tiny_model
from service_doubles import RecordingJobControl

from bot.config import Settings
from bot.core.formatting import AI_LABEL, reply_as_text
from bot.core.replies import GeneratedTweets, Notice, QueuedForTraining, Requester, TextReply
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine

ALICE = Requester(user_id=101, name="alice", channel_id=1, guild_id=9)
BOB = Requester(user_id=102, name="bob", channel_id=1, guild_id=9)
OPERATOR = 900
OPERATOR_ROLE = 700


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One published model for the whole module: building it is most of a test's cost."""
    models_dir = tmp_path_factory.mktemp("models")
    publish_tiny_model(models_dir, "sample", display_name="Sample Person")
    return models_dir


@pytest.fixture(scope="module")
def engine(shared_models: Path) -> Iterator[GenerationEngine]:
    settings = Settings(storage={"models_dir": str(shared_models)}, generation={"device": "cpu"})
    with GenerationEngine(settings) as engine:
        yield engine


@pytest.fixture
def make_service(
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    shared_models: Path,
    engine: GenerationEngine,
) -> Callable[..., TweetlikeService]:
    def factory(jobs: RecordingJobControl | None = None, **sections: Any) -> TweetlikeService:
        discord = {
            "operator_ids": [OPERATOR],
            "operator_role_ids": [OPERATOR_ROLE],
            "rate_limit_burst": 2,
            "rate_limit_per_minute": 6,  # one request every 10 s after a burst of two
        }
        discord.update(sections.pop("discord", {}))
        storage = {"models_dir": str(shared_models)}
        settings = make_settings(discord=discord, storage=storage, **sections)
        return TweetlikeService(settings, engine, jobs, clock=clock)

    return factory


async def test_tweetlike_returns_tweets_that_begin_with_the_prompt(make_service) -> None:
    service = make_service()
    reply = await service.tweetlike(ALICE, "sample", "My dream is", count=2, seed=7)
    assert isinstance(reply, GeneratedTweets)
    assert len(reply.tweets) == 2
    assert all(t.startswith("My dream is") for t in reply.tweets)
    assert reply.display_name == "Sample Person"
    assert reply.model == "sample"


async def test_same_seed_gives_same_tweets(make_service) -> None:
    service = make_service(discord={"rate_limit_per_minute": 0})
    first = await service.tweetlike(ALICE, "sample", "My dream is", seed=3)
    second = await service.tweetlike(ALICE, "sample", "My dream is", seed=3)
    assert isinstance(first, GeneratedTweets) and isinstance(second, GeneratedTweets)
    assert first.tweets == second.tweets


async def test_leading_at_and_capitals_in_a_handle_are_ignored(make_service) -> None:
    reply = await make_service().tweetlike(ALICE, "@Sample", "Hello", seed=1)
    assert isinstance(reply, GeneratedTweets)
    assert reply.model == "sample"


@pytest.mark.parametrize("handle", ["", "has space!", "way_too_long_handle_x", "a/b", "@"])
async def test_invalid_handle_is_refused_ephemerally(make_service, handle: str) -> None:
    reply = await make_service().tweetlike(ALICE, handle, "Hello")
    assert isinstance(reply, Notice) and reply.ephemeral
    assert "X handle" in reply.text or "at least one handle" in reply.text


async def test_blocked_handle_is_refused_even_with_a_model(make_service) -> None:
    service = make_service(training={"blocked_handles": ["Sample"]})
    reply = await service.tweetlike(ALICE, "sample", "Hello")
    assert isinstance(reply, Notice) and "opted out" in reply.text
    assert service.autocomplete_handles("sa") == []


async def test_prompt_over_the_limit_is_refused_with_the_limit(make_service) -> None:
    service = make_service(discord={"max_prompt_chars": 20})
    reply = await service.tweetlike(ALICE, "sample", "x" * 21)
    assert isinstance(reply, Notice)
    assert "21 characters" in reply.text and "limit is 20" in reply.text


@pytest.mark.parametrize(("count", "temperature"), [(0, None), (6, None), (1, 0.05), (1, 2.5)])
async def test_count_and_temperature_out_of_bounds_are_refused(
    make_service, count: int, temperature: float | None
) -> None:
    reply = await make_service().tweetlike(ALICE, "sample", "Hi", count, temperature)
    assert isinstance(reply, Notice) and "between" in reply.text


async def test_a_member_may_ask_a_burst_then_is_told_when_to_ask_again(make_service, clock) -> None:
    service = make_service()
    for _ in range(2):
        assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), GeneratedTweets)
    refused = await service.tweetlike(ALICE, "sample", "A", seed=1)
    assert isinstance(refused, Notice) and refused.ephemeral
    assert "ask again in 10s" in refused.text and "2 requests in a row" in refused.text
    clock.now += 4
    assert "ask again in 6s" in (await service.tweetlike(ALICE, "sample", "A")).text


async def test_the_allowance_refills_one_request_per_interval_up_to_the_burst(
    make_service, clock
) -> None:
    service = make_service()
    for _ in range(2):
        await service.tweetlike(ALICE, "sample", "A", seed=1)
    clock.now += 10
    assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), GeneratedTweets)
    assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), Notice)
    clock.now += 60  # a long pause refills the whole burst, and no more
    for _ in range(2):
        assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), GeneratedTweets)
    assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), Notice)


async def test_the_allowance_is_per_member_not_per_channel(make_service) -> None:
    service = make_service()
    for _ in range(2):
        await service.tweetlike(ALICE, "sample", "A", seed=1)
    same_channel_other_user = await service.tweetlike(BOB, "sample", "A", seed=1)
    assert isinstance(same_channel_other_user, GeneratedTweets)
    alice_elsewhere = Requester(user_id=ALICE.user_id, channel_id=2, guild_id=10)
    assert isinstance(await service.tweetlike(alice_elsewhere, "sample", "A"), Notice)


async def test_a_refused_request_spends_nothing_from_the_allowance(make_service) -> None:
    service = make_service()
    await service.tweetlike(ALICE, "not valid!", "A")
    await service.tweetlike(ALICE, "sample", "x" * 500)
    for _ in range(2):
        assert isinstance(await service.tweetlike(ALICE, "sample", "A", seed=1), GeneratedTweets)


async def test_a_second_request_while_the_first_is_generating_is_refused(make_service) -> None:
    service = make_service(discord={"rate_limit_burst": 5})
    accepted, release = asyncio.Event(), asyncio.Event()

    async def hold(plan: object) -> None:
        accepted.set()
        await release.wait()

    first = asyncio.create_task(service.tweetlike(ALICE, "sample", "One", seed=1, accepted=hold))
    await asyncio.wait_for(accepted.wait(), 30)
    second = await service.tweetlike(ALICE, "sample", "Two", seed=1)
    assert isinstance(second, Notice) and second.ephemeral
    assert "previous request is still being generated" in second.text
    assert isinstance(await service.tweetlike(BOB, "sample", "Other", seed=1), GeneratedTweets)
    release.set()
    assert isinstance(await asyncio.wait_for(first, 30), GeneratedTweets)
    assert isinstance(await service.tweetlike(ALICE, "sample", "Two", seed=1), GeneratedTweets)


async def test_a_failed_generation_leaves_the_member_free_to_ask_again(make_service) -> None:
    service = make_service(generation={"request_timeout_seconds": 0.0001})
    failed = await service.tweetlike(ALICE, "sample", "Too slow")
    assert isinstance(failed, Notice) and "took longer" in failed.text
    again = await service.tweetlike(ALICE, "sample", "Too slow")
    assert "still being generated" not in again.text


async def test_the_console_user_has_no_allowance_and_no_in_flight_limit(make_service) -> None:
    service = make_service(discord={"rate_limit_burst": 1})
    console = Requester(user_id=0, is_console=True)
    replies = await asyncio.gather(
        *(service.tweetlike(console, "sample", f"Line {n}", seed=n) for n in range(4))
    )
    assert all(isinstance(reply, GeneratedTweets) for reply in replies)


async def test_unknown_handle_is_queued_for_training_with_the_prompt(make_service) -> None:
    jobs = RecordingJobControl()
    service = make_service(jobs, x={"bearer_token": "x-token"})
    reply = await service.tweetlike(ALICE, "@NewPerson", "My dream is")
    assert isinstance(reply, QueuedForTraining)
    assert (reply.model, reply.position, reply.prompt) == ("newperson", 1, "My dream is")
    call = jobs.trainings[0]
    assert (call.handles, call.reason, call.requester, call.prompt) == (
        ["newperson"],
        "new_user",
        ALICE,
        "My dream is",
    )
    again = await service.tweetlike(BOB, "newperson", "Other")
    assert isinstance(again, QueuedForTraining) and again.already_queued


async def test_unknown_handle_with_no_tweets_and_no_x_token_is_refused_with_how_to_get_some(
    make_service,
) -> None:
    jobs = RecordingJobControl()
    reply = await make_service(jobs).tweetlike(ALICE, "nosuchuser", "Hi")
    assert isinstance(reply, Notice) and reply.ephemeral
    assert "no tweets for @nosuchuser" in reply.text
    assert "`tweetlike import nosuchuser PATH`" in reply.text and "x.bearer_token" in reply.text
    assert jobs.trainings == []


async def test_unknown_handle_with_imported_tweets_is_queued_without_an_x_token(
    make_service, settings: Settings
) -> None:
    store_tweets(settings, "imported", 5)
    jobs = RecordingJobControl()
    reply = await make_service(jobs).tweetlike(ALICE, "imported", "Hi")
    assert isinstance(reply, QueuedForTraining)
    assert jobs.trainings[0].handles == ["imported"]


async def test_a_combined_model_names_each_handle_without_tweets(
    make_service, settings: Settings
) -> None:
    store_tweets(settings, "imported", 5)
    reply = await make_service(RecordingJobControl()).tweetlike(ALICE, "imported nodata", "Hi")
    assert isinstance(reply, Notice)
    assert "no tweets for @nodata," in reply.text and "@imported" not in reply.text


async def test_unknown_handle_without_a_job_runner_says_an_operator_can_train(
    make_service,
) -> None:
    reply = await make_service().tweetlike(ALICE, "newperson", "Hi")
    assert isinstance(reply, Notice)
    assert "no model for @newperson" in reply.text and "/train newperson" in reply.text


async def test_unknown_handle_with_auto_train_off_is_not_queued(make_service) -> None:
    jobs = RecordingJobControl()
    service = make_service(jobs, training={"auto_train_new_users": False})
    assert isinstance(await service.tweetlike(ALICE, "newperson", "Hi"), Notice)
    assert jobs.trainings == []


OPERATOR_CALLS: dict[str, Callable[[TweetlikeService, Requester], Any]] = {
    "train": lambda s, r: s.train(r, "sample"),
    "retrain": lambda s, r: s.retrain(r, "sample"),
    "autopost add": lambda s, r: s.autopost_add(r, "sample", 5, every="6h"),
    "autopost list": lambda s, r: s.autopost_list(r),
    "autopost remove": lambda s, r: s.autopost_remove(r, "ap1"),
    "jobs": lambda s, r: s.jobs_list(r),
    "cancel": lambda s, r: s.cancel(r, "job1"),
    "status": lambda s, r: s.status(r),
}


async def _call(service: TweetlikeService, name: str, requester: Requester) -> Any:
    result = OPERATOR_CALLS[name](service, requester)
    return await result if hasattr(result, "__await__") else result


@pytest.mark.parametrize("name", sorted(OPERATOR_CALLS))
async def test_operator_command_refuses_a_member(make_service, name: str) -> None:
    jobs = RecordingJobControl()
    reply = await _call(make_service(jobs), name, ALICE)
    assert isinstance(reply, Notice) and reply.ephemeral
    assert "operators only" in reply.text
    assert jobs.trainings == [] and jobs.cancelled == [] and jobs.posts == {}


@pytest.mark.parametrize(
    "requester",
    [
        Requester(user_id=OPERATOR),
        Requester(user_id=5, role_ids=frozenset({OPERATOR_ROLE})),
        Requester(user_id=0, is_console=True),
    ],
    ids=["operator id", "operator role", "console"],
)
async def test_operators_by_id_role_or_console_may_train(make_service, requester) -> None:
    jobs = RecordingJobControl()
    reply = await make_service(jobs).train(requester, "sample")
    assert isinstance(reply, TextReply)
    assert jobs.trainings[0].reason == "train"


async def test_train_several_handles_queues_one_combined_model(make_service) -> None:
    jobs = RecordingJobControl()
    reply = await make_service(jobs).train(Requester(user_id=OPERATOR), "@Bob alice")
    assert isinstance(reply, TextReply) and "@alice · @bob" in reply.title
    assert jobs.trainings[0].handles == ["alice", "bob"]


async def test_retrain_of_a_missing_model_points_to_train(make_service) -> None:
    jobs = RecordingJobControl()
    reply = await make_service(jobs).retrain(Requester(user_id=OPERATOR), "nobody")
    assert isinstance(reply, Notice) and "/train" in reply.text
    assert jobs.trainings == []


async def test_autopost_add_rejects_a_bad_duration(make_service) -> None:
    jobs = RecordingJobControl()
    service = make_service(jobs)
    reply = await service.autopost_add(Requester(user_id=OPERATOR), "sample", 5, every="soon")
    assert isinstance(reply, Notice) and "not a duration" in reply.text
    assert jobs.posts == {}


async def test_autopost_add_then_list_then_remove(make_service) -> None:
    jobs = RecordingJobControl()
    service = make_service(jobs)
    op = Requester(user_id=OPERATOR)
    added = await service.autopost_add(op, "sample", 5, every="6h", prompt="My dream is")
    assert isinstance(added, TextReply)
    listed = await service.autopost_list(op)
    assert isinstance(listed, TextReply) and '"My dream is"' in listed.lines[0]
    assert isinstance(await service.autopost_remove(op, "ap1"), TextReply)
    assert isinstance(await service.autopost_remove(op, "ap1"), Notice)


async def test_autopost_to_x_without_credentials_is_refused(make_service) -> None:
    jobs = RecordingJobControl()
    reply = await make_service(jobs).autopost_add(
        Requester(user_id=OPERATOR), "sample", 5, every="1h", post_to_x=True
    )
    assert isinstance(reply, Notice) and "x.consumer_key" in reply.text


async def test_cancel_of_an_unknown_job_says_where_to_look(make_service) -> None:
    reply = await make_service(RecordingJobControl()).cancel(Requester(user_id=OPERATOR), "zz")
    assert isinstance(reply, Notice) and "/jobs" in reply.text


async def test_status_shows_device_queue_and_loaded_models(make_service) -> None:
    service = make_service(discord={"rate_limit_per_minute": 0})
    await service.tweetlike(ALICE, "sample", "Hi", seed=1)
    reply = await service.status(Requester(user_id=OPERATOR))
    assert isinstance(reply, TextReply)
    text = "\n".join(reply.lines)
    assert "device: cpu" in text and "loaded models: @sample" in text
    assert "generation queue: 0 waiting" in text and "uptime:" in text


async def test_autocomplete_matches_prefix_first_then_substring(
    make_settings: Callable[..., Settings], engine: GenerationEngine, tmp_path: Path
) -> None:
    for name in ("sample", "ample", "other"):
        (tmp_path / "models" / name).mkdir(parents=True)
    service = TweetlikeService(make_settings(), engine)
    assert service.autocomplete_handles("@AMP") == ["ample", "sample"]
    assert service.autocomplete_handles("") == ["ample", "other", "sample"]
    assert service.autocomplete_handles("zzz") == []


async def test_models_lists_published_models_for_everyone(make_service) -> None:
    reply = make_service().models()
    assert reply.lines[0].startswith("@sample: 3 tweets, base tiny")


async def test_text_rendering_labels_tweets_as_ai_generated(make_service) -> None:
    reply = await make_service().tweetlike(ALICE, "sample", "Hi", seed=2)
    text = reply_as_text(reply)
    assert text.startswith("Sample Person (@sample)")
    assert AI_LABEL in text
