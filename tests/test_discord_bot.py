"""The real bot (discord.py AutoShardedBot + the service core + the engine) against the fake
Discord on 127.0.0.1: slash commands, autocomplete, buttons, ephemeral errors, mentions,
reconnects and heartbeats."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes.discord import FakeDiscord
from fakes.discord_model import FakeChannel, FakeGuild
from jobs_support import store_tweets
from model_factory import publish_tiny_model
from service_doubles import RecordingJobControl

from bot.adapters.discord_bot import TweetlikeBot
from bot.config import Settings
from bot.core.formatting import AI_LABEL
from bot.core.replies import GeneratedTweets
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine

ALICE, BOB, MOD, OPERATOR = 4001, 4002, 4003, 4004
CROWD = list(range(5000, 5016))
MANAGE_GUILD = 1 << 5
EPHEMERAL = 1 << 6
DEFERRED, MESSAGE = 5, 4
NO_PINGS = {"parse": []}
OPERATOR_COMMANDS = {"train", "retrain", "autopost", "jobs", "cancel", "status"}
GRACE_SECONDS = 30  # for replies in flight at shutdown; generous for a loaded machine


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    publish_tiny_model(models_dir, "sample", display_name="Sample Person")
    publish_tiny_model(models_dir, "pinger", ["@everyone <@123> wake up now friends"] * 3)
    publish_tiny_model(models_dir, "optedout")  # trained before the account opted out
    return models_dir


@pytest.fixture(scope="module")
def engine(shared_models: Path) -> Iterator[GenerationEngine]:
    settings = Settings(storage={"models_dir": str(shared_models)}, generation={"device": "cpu"})
    with GenerationEngine(settings) as engine:
        yield engine


class FakeClock:
    """The members' allowance runs on this clock, so waits are exact whatever the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedEngine:
    """The real engine behind a gate: requests stay in flight until the test opens it."""

    def __init__(self, engine: GenerationEngine) -> None:
        self._engine = engine
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.open.wait()
        return await self._engine.generate(*args, **kwargs)

    def stats(self) -> Any:
        return self._engine.stats()


@dataclass
class World:
    fake: FakeDiscord
    guild: FakeGuild
    channel: FakeChannel
    bot: TweetlikeBot
    jobs: RecordingJobControl
    stop: asyncio.Event
    serving: asyncio.Task[None]
    clock: FakeClock
    ping_allowed: int | None = None  # the one user a ready-ping may mention

    async def slash(self, name: str, options: dict[str, Any] | None = None, **kw: Any) -> Any:
        kw.setdefault("user_id", ALICE)
        return await self.fake.slash(name, options, channel_id=self.channel.id, **kw)

    async def tweetlike(self, handle: str, prompt: str, **kw: Any) -> Any:
        options = {"handle": handle, "prompt": prompt}
        options.update({k: kw.pop(k) for k in ("count", "temperature") if k in kw})
        return await self.slash("tweetlike", options, **kw)


@pytest.fixture
def make_world(
    discord_fake: FakeDiscord,
    make_settings: Callable[..., Settings],
    shared_models: Path,
    engine: GenerationEngine,
) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**discord: Any) -> AsyncIterator[World]:
        fake = discord_fake
        guild = fake.add_guild("Tweetlike Test")
        channel = fake.add_channel(guild.id, "general")
        managers = fake.add_role(guild.id, "managers", permissions=MANAGE_GUILD)
        fake.add_member(ALICE, "alice")
        fake.add_member(BOB, "bob")
        fake.add_member(MOD, "mod", roles=[managers.id])
        fake.add_member(OPERATOR, "op", roles=[managers.id])
        for user_id in CROWD:
            fake.add_member(user_id, f"user{user_id}")
        settings = make_settings(
            discord={
                "api_base_url": fake.api_base_url,
                "guild_ids": [guild.id],
                "operator_ids": [OPERATOR],
                "rate_limit_burst": 2,
                "rate_limit_per_minute": 1,
                **discord,
            },
            storage={"models_dir": str(shared_models)},
            training={"blocked_handles": ["optedout"]},
        )
        jobs = RecordingJobControl()
        clock = FakeClock()
        bot = TweetlikeBot(settings, TweetlikeService(settings, engine, jobs, clock=clock))
        stop = asyncio.Event()
        serving = asyncio.create_task(_log_in_and_serve(bot, fake.token, stop))
        ready = asyncio.create_task(fake.wait_until_ready())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            ready.cancel()
            serving.result()
        await ready
        world = World(fake, guild, channel, bot, jobs, stop, serving, clock)
        try:
            yield world
        finally:
            stop.set()
            await asyncio.wait_for(serving, GRACE_SECONDS + 10)
        assert_no_pings(fake, world.ping_allowed)

    return start


async def _log_in_and_serve(bot: TweetlikeBot, token: str, stop: asyncio.Event) -> None:
    async with bot:
        await bot.log_in(token)
        await bot.serve(stop, grace_seconds=GRACE_SECONDS)


def assert_no_pings(fake: FakeDiscord, allowed_user: int | None = None) -> None:
    """Every message body the bot sent suppresses @everyone, roles and users."""
    for body in fake.sent_payloads():
        mentions = body.get("allowed_mentions")
        assert mentions is not None, body
        assert mentions["parse"] == [], body
        assert "roles" not in mentions, body
        assert mentions.get("users", []) in ([], [allowed_user]), body


def is_ephemeral_answer(event: Any) -> bool:
    return event.callback_type == MESSAGE and event.data.get("flags", 0) & EPHEMERAL


async def test_commands_are_synced_to_the_configured_guild_only(make_world) -> None:
    async with make_world() as world:
        synced = {c["name"]: c for c in world.fake.synced_commands(world.guild.id)}
        assert set(synced) == {"tweetlike", "models", *OPERATOR_COMMANDS}
        assert world.fake.synced_commands() == []
        hidden = {n for n, c in synced.items() if c.get("default_member_permissions")}
        assert hidden == OPERATOR_COMMANDS
        options = {o["name"]: o for o in synced["tweetlike"]["options"]}
        assert options["handle"]["autocomplete"] is True
        assert synced["retrain"]["options"][0]["autocomplete"] is True
        assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 5)
        assert {o["name"] for o in synced["autopost"]["options"]} == {"add", "list", "remove"}


async def test_tweetlike_defers_publicly_then_posts_tweet_embeds(make_world) -> None:
    async with make_world() as world:
        interaction = await world.tweetlike("sample", "My dream is", count=2)
        callback = await interaction.wait_for_response()
        assert callback.callback_type == DEFERRED and callback.after_s < 3
        assert not callback.data.get("flags", 0) & EPHEMERAL
        answer = (await interaction.wait_for("followup", timeout=30)).message
        assert answer is not None and not answer["flags"] & EPHEMERAL
        assert len(answer["embeds"]) == 2
        for embed in answer["embeds"]:
            assert embed["description"].startswith("My dream is")
            assert embed["author"]["name"] == "Sample Person (@sample)"
            assert embed["footer"]["text"] == AI_LABEL
        button = answer["components"][0]["components"][0]
        assert (button["label"], button["emoji"]["name"]) == ("Regenerate", "🔁")
        assert button["custom_id"] == "tl:regen:2::sample:=My dream is"


async def test_handle_autocomplete_lists_published_models(make_world) -> None:
    async with make_world() as world:
        typed = await world.fake.autocomplete(
            "tweetlike", "handle", "@SA", user_id=ALICE, channel_id=world.channel.id
        )
        assert await typed.choices() == [{"name": "@sample", "value": "sample"}]
        empty = await world.fake.autocomplete(
            "tweetlike", "handle", "", user_id=ALICE, channel_id=world.channel.id
        )
        assert [c["value"] for c in await empty.choices()] == ["pinger", "sample"]


async def test_regenerate_works_for_another_member(make_world) -> None:
    async with make_world() as world:
        first = await world.tweetlike("sample", "My dream is")
        message = (await first.wait_for("followup", timeout=30)).message
        custom_id = message["components"][0]["components"][0]["custom_id"]
        click = await world.fake.click(message, custom_id, user_id=BOB)
        assert (await click.wait_for_response()).callback_type == DEFERRED
        again = (await click.wait_for("followup", timeout=30)).message
        assert again["id"] != message["id"]
        assert again["embeds"][0]["description"].startswith("My dream is")
        assert again["components"][0]["components"][0]["custom_id"] == custom_id


async def test_regenerate_recovers_a_prompt_too_long_for_the_button(make_world) -> None:
    prompt = "I keep thinking about " + "very " * 20 + "long walks"
    async with make_world() as world:
        first = await world.tweetlike("sample", prompt)
        message = (await first.wait_for("followup", timeout=30)).message
        custom_id = message["components"][0]["components"][0]["custom_id"]
        assert custom_id == f"tl:regen:1::sample:#{len(prompt)}"
        click = await world.fake.click(message, custom_id, user_id=BOB)
        again = (await click.wait_for("followup", timeout=30)).message
        assert again["embeds"][0]["description"].startswith(prompt)


@pytest.mark.parametrize(
    ("handle", "prompt", "expected"),
    [
        ("no way!", "Hi", "is not an X handle"),
        ("sample", "x" * 201, "the limit is 200"),
        ("optedout", "Hi", "opted out"),
        ("nobody", "Hi", "no way to download them"),
    ],
    ids=["bad handle", "long prompt", "blocked handle with a model", "unknown handle, no data"],
)
async def test_refusals_are_ephemeral_and_leave_nothing_public(
    make_world, handle: str, prompt: str, expected: str
) -> None:
    async with make_world() as world:
        refused = await world.tweetlike(handle, prompt)
        callback = await refused.wait_for_response()
        assert is_ephemeral_answer(callback)
        assert expected in callback.data["content"]
        assert [m for m in world.fake.messages(world.channel.id) if not m["flags"]] == []
        served = await world.tweetlike("sample", "Still here", user_id=BOB)
        assert (await served.wait_for("followup", timeout=30)).message["embeds"]


async def test_unknown_handle_with_stored_tweets_is_queued_privately(make_world) -> None:
    async with make_world() as world:
        store_tweets(world.bot.settings, "newbie", 5)
        queued = await world.tweetlike("newbie", "Hi")
        callback = await queued.wait_for_response()
        assert callback.callback_type == DEFERRED and callback.data["flags"] & EPHEMERAL
        answer = (await queued.wait_for("followup")).data
        assert "queued its training" in answer["content"]
        assert [c.handles for c in world.jobs.trainings] == [["newbie"]]


async def test_after_a_burst_a_member_is_told_privately_when_to_ask_again(make_world) -> None:
    async with make_world() as world:
        for prompt in ("One", "Two"):
            served = await world.tweetlike("sample", prompt)
            await served.wait_for("followup", timeout=30)
        world.clock.now += 20
        third = await world.tweetlike("sample", "Three")
        callback = await third.wait_for_response()
        assert is_ephemeral_answer(callback)
        assert "ask again in 40s" in callback.data["content"]
        other = await world.tweetlike("sample", "Three", user_id=BOB)
        assert (await other.wait_for("followup", timeout=30)).message["embeds"]


async def test_regenerate_pressed_as_soon_as_the_reply_appears_is_served(make_world) -> None:
    async with make_world() as world:
        first = await world.tweetlike("sample", "My dream is")
        message = (await first.wait_for("followup", timeout=30)).message
        custom_id = message["components"][0]["components"][0]["custom_id"]
        click = await world.fake.click(message, custom_id, user_id=ALICE)
        assert (await click.wait_for_response()).callback_type == DEFERRED
        again = (await click.wait_for("followup", timeout=30)).message
        assert again["embeds"][0]["description"].startswith("My dream is")


async def test_a_second_request_while_the_first_is_in_flight_is_refused_privately(
    make_world, engine: GenerationEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_world(rate_limit_burst=5) as world:
        first = await world.tweetlike("sample", "My dream is")
        message = (await first.wait_for("followup", timeout=30)).message
        custom_id = message["components"][0]["components"][0]["custom_id"]
        gated = GatedEngine(engine)
        monkeypatch.setattr(world.bot.service, "engine", gated)
        regenerating = await world.fake.click(message, custom_id, user_id=ALICE)
        await asyncio.wait_for(gated.entered.wait(), 30)
        for again in (
            await world.fake.click(message, custom_id, user_id=ALICE),
            await world.tweetlike("sample", "Something else"),
        ):
            callback = await again.wait_for_response()
            assert is_ephemeral_answer(callback)
            assert "still being generated" in callback.data["content"]
        gated.open.set()
        assert (await regenerating.wait_for("followup", timeout=30)).message["embeds"]


async def test_regenerate_of_a_message_from_before_an_opt_out_is_refused(make_world) -> None:
    async with make_world() as world:
        old = GeneratedTweets(model="optedout", prompt="Hi", tweets=["Hi from before"])
        await world.bot.post_tweets(world.channel.id, old)
        message = await world.fake.wait_for_message(world.channel.id, kinds=("create",))
        custom_id = message["components"][0]["components"][0]["custom_id"]
        click = await world.fake.click(message, custom_id, user_id=BOB)
        callback = await click.wait_for_response()
        assert is_ephemeral_answer(callback) and "opted out" in callback.data["content"]
        public = [m["id"] for m in world.fake.messages(world.channel.id) if not m["flags"]]
        assert public == [message["id"]]


async def test_models_hides_an_opted_out_account(make_world) -> None:
    async with make_world() as world:
        listing = await world.slash("models")
        callback = await listing.wait_for_response()
        shown = callback.data["embeds"][0]["description"]
        assert "@sample" in shown and "optedout" not in shown


async def test_generation_failure_after_defer_removes_the_public_placeholder(make_world) -> None:
    async with make_world() as world:
        world.bot.service.settings.generation.request_timeout_seconds = 0.0001
        interaction = await world.tweetlike("sample", "Too slow")
        assert (await interaction.wait_for_response()).callback_type == DEFERRED
        await interaction.wait_for("delete_original")
        notice = (await interaction.wait_for("followup")).message
        assert notice["flags"] & EPHEMERAL and "took longer" in notice["content"]
        assert world.fake.messages(world.channel.id) == [notice]


OPERATOR_INVOCATIONS: list[tuple[str, dict[str, Any], str | None]] = [
    ("train", {"handle": "sample"}, None),
    ("retrain", {"handle": "sample"}, None),
    ("autopost", {"handle": "sample", "channel": 0, "every": "6h"}, "add"),
    ("autopost", {}, "list"),
    ("autopost", {"id": "ap1"}, "remove"),
    ("jobs", {}, None),
    ("cancel", {"job": "job1"}, None),
    ("status", {}, None),
]


async def test_every_operator_command_refuses_a_non_operator(make_world) -> None:
    async with make_world() as world:
        for name, options, subcommand in OPERATOR_INVOCATIONS:
            if "channel" in options:
                options = {**options, "channel": world.channel.id}
            # MOD can see the commands (Manage Server) but is not a configured operator.
            interaction = await world.slash(name, options, user_id=MOD, subcommand=subcommand)
            callback = await interaction.wait_for_response()
            answer = callback.data if callback.callback_type == MESSAGE else None
            if answer is None:
                assert callback.data["flags"] & EPHEMERAL
                answer = (await interaction.wait_for("followup")).data
            assert "operators only" in answer["content"], (name, subcommand)
        assert world.jobs.trainings == [] and world.jobs.cancelled == []
        assert world.jobs.posts == {}
        status = await world.slash("status", user_id=OPERATOR)
        callback = await status.wait_for_response()
        assert callback.data["flags"] & EPHEMERAL
        assert "device: cpu" in callback.data["embeds"][0]["description"]


async def test_generated_mentions_ping_nobody(make_world) -> None:
    async with make_world() as world:
        interaction = await world.tweetlike("pinger", "@everyone <@123>", count=3)
        message = (await interaction.wait_for("followup", timeout=30)).message
        assert all("@everyone <@123>" in e["description"] for e in message["embeds"])
        assert message.get("content", "") == ""
        assert_no_pings(world.fake)


async def test_notifier_posts_ping_only_the_requester_and_progress_edits_one_message(
    make_world,
) -> None:
    async with make_world() as world:
        bot, channel_id = world.bot, world.channel.id
        tweets = GeneratedTweets(model="pinger", prompt="@everyone", tweets=["@everyone <@1> hi"])
        await bot.post_tweets(channel_id, tweets, mention_user_id=ALICE)
        await bot.post_text(channel_id, "@here done", mention_user_id=None)
        first = await bot.post_progress(channel_id, "job7", "Training 10%", message_id=None)
        second = await bot.post_progress(channel_id, "job7", "Training 90%", message_id=first)
        assert first == second
        bodies = world.fake.sent_payloads()
        assert bodies[0]["allowed_mentions"] == {"parse": [], "users": [ALICE]}
        assert bodies[0]["content"] == f"<@{ALICE}>"
        assert all(b["allowed_mentions"] == NO_PINGS for b in bodies[1:])
        progress = [m for m in world.fake.messages(channel_id) if "Training" in m["content"]]
        assert [m["content"] for m in progress] == ["Training 90%"]
        cancel_id = progress[0]["components"][0]["components"][0]["custom_id"]
        # Cancelling can outlast Discord's 3 s, so the click is deferred (ephemerally) first.
        refused = await world.fake.click(progress[0], cancel_id, user_id=ALICE)
        assert (await refused.wait_for_response()).data["flags"] & EPHEMERAL
        assert "operators only" in (await refused.wait_for("followup")).data["content"]
        world.jobs.known_jobs.add("job7")
        accepted = await world.fake.click(progress[0], cancel_id, user_id=OPERATOR)
        assert (await accepted.wait_for_response()).data["flags"] & EPHEMERAL
        answer = (await accepted.wait_for("followup")).data
        assert answer["flags"] & EPHEMERAL and world.jobs.cancelled == ["job7"]
        await bot.post_progress(
            channel_id, "job7", "Training done", message_id=first, finished=True
        )
        done = await world.fake.wait_for_message(
            channel_id, lambda m: m["content"] == "Training done", kinds=("edit",)
        )
        assert not done.get("components"), "a finished job's message keeps no Cancel button"
        world.ping_allowed = ALICE


async def test_bot_reconnects_after_a_dropped_connection_and_answers(make_world) -> None:
    async with make_world() as world:
        world.fake.drop_connection()
        await world.fake.wait_until_ready()
        interaction = await world.tweetlike("sample", "Back again")
        message = (await interaction.wait_for("followup", timeout=30)).message
        assert message["embeds"][0]["description"].startswith("Back again")


async def test_heartbeats_stay_on_time_while_16_requests_generate(make_world) -> None:
    async with make_world() as world:
        interval = world.fake.heartbeat_interval
        started = asyncio.get_running_loop().time()
        requests = [
            await world.tweetlike("sample", f"Crowd {n}", count=5, user_id=user_id)
            for n, user_id in enumerate(CROWD)
        ]
        for request in requests:
            assert (await request.wait_for_response()).after_s < 3
        await asyncio.gather(*(r.wait_for("followup", timeout=60) for r in requests))
        finished = asyncio.get_running_loop().time()
        beats = await world.fake.wait_for_heartbeats(len(world.fake.heartbeats()) + 1)
        window = [b for b in beats if started - interval <= b <= finished + interval]
        gaps = [later - earlier for earlier, later in itertools.pairwise(window)]
        # Generating on the loop would hold a beat back for a batch's worth of the work; a
        # busy machine stretches the work and the beats' jitter alike, so the bound scales
        # with the work rather than being a fixed number of seconds.
        assert gaps and max(gaps) <= interval + (finished - started) / 4, gaps


async def test_a_failing_handler_gets_an_ephemeral_apology_and_the_bot_keeps_serving(
    make_world, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_world() as world:

        def broken() -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(world.bot.service, "models", broken)
        failed = await world.slash("models")
        callback = await failed.wait_for_response()
        assert is_ephemeral_answer(callback) and "Sorry" in callback.data["content"]
        assert "disk on fire" in caplog.text
        served = await world.tweetlike("sample", "Still fine")
        assert (await served.wait_for("followup", timeout=30)).message["embeds"]


async def test_shutdown_lets_an_in_flight_reply_finish(make_world) -> None:
    async with make_world() as world:
        interaction = await world.tweetlike("sample", "Last words", count=5)
        assert (await interaction.wait_for_response()).callback_type == DEFERRED
        world.stop.set()
        await asyncio.wait_for(world.serving, GRACE_SECONDS + 10)
        answer = interaction.followups()[0].message
        assert answer is not None and answer["embeds"][0]["description"].startswith("Last words")


async def test_tweetlike_run_serves_discord_and_stops_on_sigterm(
    discord_fake: FakeDiscord, shared_models: Path, tmp_path: Path
) -> None:
    fake = discord_fake
    guild = fake.add_guild("Tweetlike Test")
    channel = fake.add_channel(guild.id, "general")
    fake.add_member(ALICE, "alice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEETLIKE_")}
    env.update(
        TWEETLIKE_DISCORD__TOKEN=fake.token,
        TWEETLIKE_DISCORD__API_BASE_URL=fake.api_base_url,
        TWEETLIKE_DISCORD__GUILD_IDS=f'["{guild.id}"]',
        TWEETLIKE_STORAGE__MODELS_DIR=str(shared_models),
        TWEETLIKE_GENERATION__DEVICE="cpu",
        OMP_NUM_THREADS="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    try:
        await fake.wait_until_ready(timeout=60)
        interaction = await fake.slash(
            "tweetlike",
            {"handle": "sample", "prompt": "From the service"},
            user_id=ALICE,
            channel_id=channel.id,
        )
        answer = (await interaction.wait_for("followup", timeout=30)).message
        assert answer["embeds"][0]["description"].startswith("From the service")
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert fake.token not in err.decode()
