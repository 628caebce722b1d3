"""Start-up against a Discord having an outage: the real bot against the fake Discord, which
answers chosen routes with HTTP errors. Transient failures are retried with backoff; what is
left is one line, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.discord import FakeDiscord

from bot.adapters.discord_bot import TweetlikeBot
from bot.adapters.discord_startup import RetryPolicy
from bot.config import Settings
from bot.core.service import TweetlikeService
from bot.errors import TweetlikeError
from bot.generation.engine import GenerationEngine

QUICK = RetryPolicy(attempts=3, first_delay=0.01)
LOGIN = ("GET", "/users/@me")
GATEWAY = ("GET", "/gateway/bot")


def make_bot(settings: Settings, policy: RetryPolicy = QUICK) -> TweetlikeBot:
    engine = GenerationEngine(settings)  # never started: these tests generate nothing
    return TweetlikeBot(settings, TweetlikeService(settings, engine), start_up_retries=policy)


@pytest.fixture
def bot_settings(
    discord_fake: FakeDiscord, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    guild = discord_fake.add_guild("Tweetlike Test")

    def factory(**discord: object) -> Settings:
        return make_settings(
            discord={
                "api_base_url": discord_fake.api_base_url,
                "guild_ids": [guild.id],
                **discord,
            }
        )

    return factory


async def serve_until_ready(bot: TweetlikeBot, fake: FakeDiscord) -> None:
    """Log in and connect; return once the gateway session is ready, then shut down."""
    stop = asyncio.Event()

    async def run() -> None:
        async with bot:
            await bot.log_in(fake.token)
            await bot.serve(stop, grace_seconds=1)

    serving = asyncio.create_task(run())
    ready = asyncio.create_task(fake.wait_until_ready(timeout=30))
    await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        ready.cancel()
        serving.result()
        raise AssertionError("the bot stopped before its gateway session was ready")
    await ready
    stop.set()
    await asyncio.wait_for(serving, 20)


async def run_until_it_fails(bot: TweetlikeBot, fake: FakeDiscord) -> TweetlikeError:
    async def run() -> None:
        async with bot:
            await bot.log_in(fake.token)
            await bot.serve(asyncio.Event(), grace_seconds=1)

    with pytest.raises(TweetlikeError) as failure:
        await asyncio.wait_for(run(), 30)
    return failure.value


def count(fake: FakeDiscord, route: tuple[str, str]) -> int:
    return fake.requests.count(route)


def assert_no_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert "Unclosed client session" not in caplog.text


async def test_login_answered_503_is_retried_and_the_bot_connects(
    discord_fake: FakeDiscord, bot_settings, caplog: pytest.LogCaptureFixture
) -> None:
    discord_fake.fail_next(*LOGIN, [503, 503])
    await serve_until_ready(make_bot(bot_settings()), discord_fake)
    assert count(discord_fake, LOGIN) == 3
    assert "trying again" in caplog.text and "503 Service Unavailable" in caplog.text
    assert_no_traceback_logged(caplog)


async def test_login_failing_every_attempt_ends_in_one_line(
    discord_fake: FakeDiscord, bot_settings, caplog: pytest.LogCaptureFixture
) -> None:
    discord_fake.fail_next(*LOGIN, [503, 520, 503])
    error = await run_until_it_fails(make_bot(bot_settings()), discord_fake)
    message = str(error)
    assert message.startswith("logging in to Discord failed 3 times")
    assert "Discord answered 503 Service Unavailable" in message
    assert "\n" not in message
    assert count(discord_fake, LOGIN) == 3
    assert_no_traceback_logged(caplog)


async def test_a_client_error_at_login_is_not_retried(
    discord_fake: FakeDiscord, bot_settings
) -> None:
    discord_fake.fail_next(*LOGIN, [403])
    error = await run_until_it_fails(make_bot(bot_settings()), discord_fake)
    assert str(error) == "logging in to Discord failed: Discord answered 403 Forbidden"
    assert count(discord_fake, LOGIN) == 1


async def test_a_refused_token_is_not_retried(discord_fake: FakeDiscord, bot_settings) -> None:
    bot = make_bot(bot_settings())
    with pytest.raises(TweetlikeError, match="refused the bot token"):
        async with bot:
            await bot.log_in("not-the-token")
    assert count(discord_fake, LOGIN) == 1


async def test_unreachable_discord_is_retried_then_named_in_one_line(
    make_settings: Callable[..., Settings],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v10"
    bot = make_bot(make_settings(discord={"api_base_url": base}), RetryPolicy(2, 0.01))
    with pytest.raises(TweetlikeError) as failure:
        async with bot:
            await bot.log_in("any-token")
    assert str(failure.value).startswith("logging in to Discord failed 2 times")
    assert f"cannot reach Discord at {base}" in str(failure.value)


async def test_a_failed_command_sync_at_login_is_retried_without_adding_the_cogs_twice(
    discord_fake: FakeDiscord, bot_settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_settings()
    guild_id = settings.discord.guild_ids[0]
    sync = ("PUT", f"/applications/{discord_fake.application_id}/guilds/{guild_id}/commands")
    discord_fake.fail_next(*sync, [503])
    await serve_until_ready(make_bot(settings), discord_fake)
    assert count(discord_fake, sync) == 2
    assert {c["name"] for c in discord_fake.synced_commands(guild_id)} >= {"tweetlike", "models"}
    assert_no_traceback_logged(caplog)


async def test_a_guild_the_bot_is_not_in_is_named_in_one_line(
    discord_fake: FakeDiscord, bot_settings
) -> None:
    error = await run_until_it_fails(make_bot(bot_settings(guild_ids=[42])), discord_fake)
    assert str(error).startswith("Discord refused the slash commands for guild 42")
    assert "applications.commands" in str(error)


async def test_gateway_url_answered_503_is_retried_and_the_bot_connects(
    discord_fake: FakeDiscord, bot_settings, caplog: pytest.LogCaptureFixture
) -> None:
    discord_fake.fail_next(*GATEWAY, [503, 503])
    await serve_until_ready(make_bot(bot_settings()), discord_fake)
    assert count(discord_fake, GATEWAY) == 3
    assert_no_traceback_logged(caplog)


async def test_gateway_url_failing_every_attempt_ends_in_one_line(
    discord_fake: FakeDiscord, bot_settings, caplog: pytest.LogCaptureFixture
) -> None:
    discord_fake.fail_next(*GATEWAY, [503, 503, 503])
    error = await run_until_it_fails(make_bot(bot_settings()), discord_fake)
    assert str(error).startswith("connecting to the Discord gateway failed 3 times")
    assert "503 Service Unavailable" in str(error)
    assert_no_traceback_logged(caplog)


async def test_tweetlike_run_reports_a_login_error_in_one_line(
    discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    discord_fake.fail_next(*LOGIN, [403])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEETLIKE_")}
    env.update(
        TWEETLIKE_DISCORD__TOKEN=discord_fake.token,
        TWEETLIKE_DISCORD__API_BASE_URL=discord_fake.api_base_url,
        TWEETLIKE_STORAGE__MODELS_DIR=str(tmp_path / "models"),
        TWEETLIKE_GENERATION__DEVICE="cpu",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert process.returncode == 1
    assert "Traceback" not in err.decode()
    assert lines[-1] == (
        "tweetlike: error: logging in to Discord failed: Discord answered 403 Forbidden"
    )
    assert discord_fake.token not in err.decode()


def test_backoff_doubles_from_the_first_delay() -> None:
    policy = RetryPolicy(attempts=4, first_delay=2.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
