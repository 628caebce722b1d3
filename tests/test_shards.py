"""Several bot processes on one database against the fake Discord: each serves its shards,
one leads the scheduler, the others hand it their requests; a second leader is refused.

These run real ``python -m bot run`` processes (on SQLite and, when ``TEST_POSTGRES_URL``
is set, on PostgreSQL), as an operator would start them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.discord import FakeDiscord
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.jobs.runner import child_environment

OPERATOR = 4004
SHARDS = 2
START_SECONDS = 180  # two processes importing torch on a loaded two-core machine
STOP_SECONDS = 30


class BotProcess:
    """One ``python -m bot run`` with its own settings, logging to a file."""

    def __init__(self, name: str, settings: Settings, cwd: Path, *args: str) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", *args],
                cwd=cwd,
                env=child_environment(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    async def exit_status(self, timeout: float = STOP_SECONDS) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.exit_status()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for process in started:
        process.kill()


def fail_with_logs(processes: list[BotProcess], what: str) -> None:
    logs = "\n".join(f"--- {p.name}:\n{p.output()[-4000:]}" for p in processes)
    pytest.fail(f"{what}\n{logs}")


def is_autopost(message: dict[str, Any]) -> bool:
    embeds = message.get("embeds") or [{}]
    return str(embeds[0].get("description", "")).startswith("From one")


async def answer_of(fake: FakeDiscord, command: str, options: dict[str, Any], **kw: Any) -> Any:
    interaction = await fake.slash(command, options, user_id=OPERATOR, force=True, **kw)
    callback = await interaction.wait_for_response()
    if callback.callback_type == 4:
        return callback.data
    return (await interaction.wait_for("followup", timeout=60)).data


async def test_two_processes_split_the_shards_and_only_the_leader_schedules(
    discord_fake: FakeDiscord,
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    processes: list[BotProcess],
) -> None:
    fake = discord_fake
    guilds = [
        fake.add_guild(f"Shard {n}", guild_id=fake.guild_id_on_shard(n, SHARDS)) for n in (0, 1)
    ]
    channels = [fake.add_channel(guild.id, "general") for guild in guilds]
    for guild in guilds:
        fake.add_member(OPERATOR, "op", guild_id=guild.id)

    def settings(shard: int, *, leads: bool) -> Settings:
        return make_settings(
            discord={
                "token": fake.token,
                "api_base_url": fake.api_base_url,
                "guild_ids": [guild.id for guild in guilds],
                "operator_ids": [OPERATOR],
                "shard_ids": [shard],
                "shard_count": SHARDS,
            },
            storage={"database_url": database_url},
            scheduler={"enabled": leads, "lease_seconds": 3, "poll_seconds": 0.2},
        )

    publish_tiny_model(settings(0, leads=True).storage.models_dir, "sample")
    leader = BotProcess("leader", settings(0, leads=True), tmp_path)
    gateway = BotProcess("gateway", settings(1, leads=False), tmp_path)
    processes += [leader, gateway]
    try:
        ready = await fake.wait_for_shards([0, 1], timeout=START_SECONDS)
    except AssertionError:
        fail_with_logs(processes, "the two processes did not connect their shards")
    assert {shard: c.shard for shard, c in ready.items()} == {0: (0, 2), 1: (1, 2)}

    # Each process answers the guild on its shard (the fake sends it nowhere else).
    for guild, channel in zip(guilds, channels, strict=True):
        answer = await answer_of(
            fake,
            "tweetlike",
            {"handle": "sample", "prompt": "Hi"},
            guild_id=guild.id,
            channel_id=channel.id,
        )
        assert answer["embeds"][0]["description"].startswith("Hi")

    # An auto-post added through the gateway process is scheduled and posted by the leader.
    added = await answer_of(
        fake,
        "autopost",
        {"handle": "sample", "channel": channels[1].id, "every": "1s", "prompt": "From one"},
        subcommand="add",
        guild_id=guilds[1].id,
        channel_id=channels[1].id,
    )
    assert "added" in added["embeds"][0]["title"], added
    await fake.wait_for_message(channels[1].id, is_autopost, 60)

    # A second process configured to lead is refused in one line.
    second = BotProcess("second-leader", settings(1, leads=True), tmp_path)
    processes.append(second)
    assert await second.exit_status(START_SECONDS) != 0
    refusal = [line for line in second.output().splitlines() if "tweetlike: error" in line]
    assert len(refusal) == 1 and "another process already runs the scheduler" in refusal[0]

    status = subprocess.run(
        [sys.executable, "-m", "bot", "status"],
        cwd=tmp_path,
        env=child_environment(settings(0, leads=False)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "scheduler leader: " in status.stdout and "shards: all 2 served" in status.stdout
    assert status.stdout.count("\nprocess ") == 2

    # Without the leader nothing is posted on schedule, though the gateway process still
    # serves its shard and shows what is scheduled.
    assert await leader.stop() == 0
    posted = [m for m in fake.messages(channels[1].id) if is_autopost(m)]
    await asyncio.sleep(4)  # four periods of the 1 s auto-post
    assert [m for m in fake.messages(channels[1].id) if is_autopost(m)] == posted
    listed = await answer_of(
        fake, "autopost", {}, subcommand="list", guild_id=guilds[1].id, channel_id=channels[1].id
    )
    assert "every 1s" in listed["embeds"][0]["description"]
    refused = await answer_of(
        fake,
        "autopost",
        {"id": "x"},
        subcommand="remove",
        guild_id=guilds[1].id,
        channel_id=channels[1].id,
    )
    assert "no scheduler leader is running" in refused["content"]
    assert await gateway.stop() == 0


async def test_only_the_process_serving_shard_zero_syncs_the_commands(
    discord_fake: FakeDiscord, make_settings: Callable[..., Settings]
) -> None:
    from fakes.discord import run_bot

    from bot.adapters.discord_bot import TweetlikeBot
    from bot.core.service import TweetlikeService
    from bot.generation.engine import GenerationEngine

    fake = discord_fake
    guild = fake.add_guild("Shard 1", guild_id=fake.guild_id_on_shard(1, SHARDS))
    for shard in (1, 0):
        settings = make_settings(
            discord={
                "api_base_url": fake.api_base_url,
                "guild_ids": [guild.id],
                "shard_ids": [shard],
                "shard_count": SHARDS,
            }
        )
        with GenerationEngine(settings) as engine:
            bot = TweetlikeBot(settings, TweetlikeService(settings, engine))
            async with run_bot(bot, fake):
                # The gateway URL came from GET /gateway/bot on the fake, not discord.gg.
                await fake.wait_for_shards([shard])
        synced = {c["name"] for c in fake.synced_commands(guild.id)}
        assert ("tweetlike" in synced) == (shard == 0), shard
