"""End to end: /tweetlike on an unknown handle, through the real bot, the fake Discord, the
job manager and a real training subprocess, to a new message pinging only the requester."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fakes.discord import FakeDiscord, run_bot
from jobs_support import store_tweets

from bot.adapters.discord_bot import TweetlikeBot
from bot.config import Settings
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager

ALICE = 1001


def is_progress(message: dict[str, Any]) -> bool:
    return message["content"].startswith("Training @newhandle")


async def test_tweetlike_on_an_unknown_handle_trains_it_and_pings_only_the_requester(
    discord_fake: FakeDiscord,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    guild = discord_fake.add_guild("Tweetlike Test")
    channel = discord_fake.add_channel(guild.id, "general")
    discord_fake.add_member(ALICE, "alice")
    settings = make_settings(
        discord={"api_base_url": discord_fake.api_base_url, "guild_ids": [guild.id]},
        training={"epochs": 1},
    )
    store_tweets(settings, "newhandle", 200)
    engine = GenerationEngine(settings)
    engine.start()
    service = TweetlikeService(settings, engine)
    bot = TweetlikeBot(settings, service)
    manager = JobManager(settings, engine, bot, progress_interval=0.5)
    service.jobs = manager
    try:
        async with run_bot(bot, discord_fake):
            await manager.start()
            interaction = await discord_fake.slash(
                "tweetlike",
                {"handle": "newhandle", "prompt": "My dream is"},
                user_id=ALICE,
                channel_id=channel.id,
            )

            queued = await interaction.wait_for("followup")
            assert "training now" in json.dumps(queued.data)
            # Starting the training subprocess alone can take many seconds on a busy machine.
            await discord_fake.wait_for_message(
                channel.id, lambda m: is_progress(m) and "%" in m["content"], kinds=("edit",)
            )
            answer = await discord_fake.wait_for_message(
                channel.id, lambda m: bool(m["embeds"]), kinds=("create",), timeout=120
            )
    finally:
        await manager.stop()
        engine.close()

    assert answer["content"] == f"<@{ALICE}>"
    assert "My dream is" in json.dumps(answer["embeds"])
    sent = next(p for p in discord_fake.sent_payloads() if p.get("content") == f"<@{ALICE}>")
    assert [str(user) for user in sent["allowed_mentions"]["users"]] == [str(ALICE)]
    assert sent["allowed_mentions"]["parse"] == []
    progress = [e for e in discord_fake.message_events if is_progress(e.message)]
    assert [e.kind for e in progress if e.kind == "create"] == ["create"]
    assert "%" in progress[-2].message["content"]
    assert progress[-1].message["content"] == "Training @newhandle done: the model is ready."
