"""The fake Discord against the real discord.py: an AutoShardedBot defined here logs in, syncs,
and answers slash commands, autocomplete and buttons through it.

This file doubles as the example for running a real bot against the fake: build the bot with
`discord.http.Route.BASE` pointing at `discord_fake.api_base_url`, add the world (guild,
channels, members), then `async with run_bot(bot, discord_fake):`.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from fakes import WAIT_SECONDS
from fakes.discord import FakeDiscord, run_bot
from fakes.discord_commands import InvalidOptions
from fakes.discord_model import FakeChannel, FakeGuild

ALICE = 4242
MODERATOR = 4343
MANAGE_GUILD = 1 << 5
FRUITS = ["apple", "apricot", "banana", "cherry"]


class VoteView(discord.ui.View):
    @discord.ui.button(label="Yes", custom_id="vote:yes", style=discord.ButtonStyle.success)
    async def yes(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(
            content=f"voted yes by {interaction.user.id}", view=None
        )


class ExampleCog(commands.Cog):
    autopost = app_commands.Group(
        name="autopost",
        description="Scheduled posts",
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self) -> None:
        self.last_interaction: discord.Interaction | None = None

    @app_commands.command(name="echo", description="Think, then echo")
    async def echo(
        self, interaction: discord.Interaction, text: str, private: bool = False
    ) -> None:
        self.last_interaction = interaction
        await interaction.response.defer(ephemeral=private, thinking=True)
        await interaction.followup.send(
            f"echo: {text}", allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(name="fruit", description="Pick a fruit")
    async def fruit(self, interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(
            f"you picked {name}", allowed_mentions=discord.AllowedMentions.none()
        )

    @fruit.autocomplete("name")
    async def fruit_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f, value=f) for f in FRUITS if f.startswith(current)]

    @app_commands.command(name="vote", description="Ask for a vote")
    async def vote(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "vote?", view=VoteView(), allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(name="slow", description="Answers after a pause")
    async def slow(self, interaction: discord.Interaction, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await interaction.response.send_message(
            "done", allowed_mentions=discord.AllowedMentions.none()
        )

    @autopost.command(name="add", description="Post a handle to a channel")
    async def autopost_add(
        self, interaction: discord.Interaction, handle: str, channel: discord.TextChannel
    ) -> None:
        await interaction.response.send_message(
            f"{handle} -> {channel.name}", allowed_mentions=discord.AllowedMentions.none()
        )


class ExampleBot(commands.AutoShardedBot):
    def __init__(self, api_base_url: str, guild_id: int) -> None:
        discord.http.Route.BASE = api_base_url
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.1,
        )
        self.guild_id = guild_id
        self.cog = ExampleCog()

    async def setup_hook(self) -> None:
        await self.add_cog(self.cog)
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)


@dataclass
class World:
    fake: FakeDiscord
    guild: FakeGuild
    channel: FakeChannel
    bot: ExampleBot


async def start_world(fake: FakeDiscord) -> AsyncIterator[World]:
    guild = fake.add_guild("Tweetlike Test")
    channel = fake.add_channel(guild.id, "general")
    fake.add_member(ALICE, "alice")
    managers = fake.add_role(guild.id, "managers", permissions=MANAGE_GUILD)
    fake.add_member(MODERATOR, "mod", roles=[managers.id])
    bot = ExampleBot(fake.api_base_url, guild.id)
    async with run_bot(bot, fake):
        yield World(fake, guild, channel, bot)


@pytest.fixture
async def world(discord_fake: FakeDiscord) -> AsyncIterator[World]:
    async for started in start_world(discord_fake):
        yield started


async def test_bot_logs_in_and_receives_ready_and_guild(world: World) -> None:
    await asyncio.wait_for(world.bot.wait_until_ready(), WAIT_SECONDS)
    assert world.bot.user is not None and world.bot.user.id == world.fake.application_id
    guild = world.bot.get_guild(world.guild.id)
    assert guild is not None and guild.get_channel(world.channel.id) is not None
    assert guild.member_count == 3 and guild.me is not None
    query = world.fake.connections[0].query
    assert query["v"] == "10" and query["encoding"] == "json" and "compress" in query


async def test_guild_command_sync_is_recorded(world: World) -> None:
    synced = {c["name"]: c for c in world.fake.synced_commands(world.guild.id)}
    assert set(synced) == {"echo", "fruit", "vote", "slow", "autopost"}
    assert synced["fruit"]["options"][0]["autocomplete"] is True
    assert synced["autopost"]["options"][0]["name"] == "add"
    assert world.fake.synced_commands() == []


async def test_slash_defers_then_follows_up(world: World) -> None:
    interaction = await world.fake.slash(
        "echo", {"text": "hi"}, user_id=ALICE, channel_id=world.channel.id
    )
    callback = await interaction.wait_for_response()
    assert callback.callback_type == 5 and callback.after_s < 3
    followup = await interaction.wait_for("followup")
    assert followup.message is not None and followup.message["content"] == "echo: hi"
    assert int(followup.message["id"]) == interaction.original_message_id
    assert all("allowed_mentions" in body for body in world.fake.sent_payloads())


async def test_ephemeral_defer_keeps_the_follow_up_private(world: World) -> None:
    interaction = await world.fake.slash(
        "echo", {"text": "psst", "private": True}, user_id=ALICE, channel_id=world.channel.id
    )
    followup = await interaction.wait_for("followup")
    assert followup.message is not None and followup.message["flags"] == 64
    channel = world.bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(int(followup.message["id"]))


async def test_subcommand_resolves_channel_option(world: World) -> None:
    interaction = await world.fake.slash(
        "autopost",
        {"handle": "fdgwhite", "channel": world.channel.id},
        subcommand="add",
        user_id=MODERATOR,
        channel_id=world.channel.id,
    )
    callback = await interaction.wait_for_response()
    assert callback.callback_type == 4
    assert callback.data["content"] == "fdgwhite -> general"


async def test_slash_refuses_what_discord_would_not_send(world: World) -> None:
    with pytest.raises(InvalidOptions, match="missing required"):
        await world.fake.slash("echo", user_id=ALICE, channel_id=world.channel.id)
    with pytest.raises(InvalidOptions, match="must be a string"):
        await world.fake.slash("echo", {"text": 3}, user_id=ALICE, channel_id=world.channel.id)
    assert world.fake.interactions == []


async def test_command_hidden_by_default_permissions_is_refused(world: World) -> None:
    with pytest.raises(PermissionError):
        await world.fake.slash(
            "autopost",
            {"handle": "fdgwhite", "channel": world.channel.id},
            subcommand="add",
            user_id=ALICE,
            channel_id=world.channel.id,
        )


async def test_autocomplete_returns_matching_choices(world: World) -> None:
    interaction = await world.fake.autocomplete(
        "fruit", focused="name", value="ap", user_id=ALICE, channel_id=world.channel.id
    )
    choices = await interaction.choices()
    assert [choice["value"] for choice in choices] == ["apple", "apricot"]


async def test_button_click_updates_the_message(world: World) -> None:
    vote = await world.fake.slash("vote", user_id=ALICE, channel_id=world.channel.id)
    callback = await vote.wait_for_response()
    assert callback.message is not None
    click = await world.fake.click(callback.message, "vote:yes", user_id=ALICE)
    clicked = await click.wait_for_response()
    assert clicked.callback_type == 7
    edited = await world.fake.wait_for_message(
        world.channel.id, lambda m: m["content"] == f"voted yes by {ALICE}"
    )
    assert edited["id"] == callback.message["id"] and edited["components"] == []


async def test_channel_message_is_posted_and_edited(world: World) -> None:
    channel = world.bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("first", allowed_mentions=discord.AllowedMentions.none())
    await sent.edit(content="second")
    posted = await world.fake.wait_for_message(world.channel.id, kinds=("create",))
    edited = await world.fake.wait_for_message(world.channel.id, kinds=("edit",))
    assert (posted["content"], edited["content"]) == ("first", "second")
    assert posted["id"] == edited["id"] == str(sent.id)
    assert [m["content"] for m in world.fake.messages(world.channel.id)] == ["second"]


async def test_file_upload_becomes_an_attachment(world: World) -> None:
    channel = world.bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send(
        "see file",
        file=discord.File(io.BytesIO(b"tweets"), "tweets.txt"),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    assert [(a.filename, a.size) for a in sent.attachments] == [("tweets.txt", 6)]
    assert world.fake.sent_payloads()[-1]["allowed_mentions"] == {"parse": []}


async def test_interaction_answered_too_late_is_recorded_as_failed(world: World) -> None:
    world.fake.ack_deadline = 0.2
    interaction = await world.fake.slash(
        "slow", {"seconds": 0.4}, user_id=ALICE, channel_id=world.channel.id
    )
    await world.fake.wait_for_rejection(10062)
    assert interaction.failed and world.fake.failed_interactions == [interaction]
    assert interaction.callback is None


async def test_follow_up_after_token_lifetime_is_refused(world: World) -> None:
    interaction = await world.fake.slash(
        "echo", {"text": "hi"}, user_id=ALICE, channel_id=world.channel.id
    )
    await interaction.wait_for("followup")
    world.fake.token_lifetime = 0.0  # the token has now outlived its lifetime, however fast
    late = world.bot.cog.last_interaction
    assert late is not None
    with pytest.raises(discord.HTTPException) as refused:
        await late.followup.send("late", allowed_mentions=discord.AllowedMentions.none())
    assert refused.value.code == 50027
    assert len(interaction.followups()) == 1


async def test_heartbeats_arrive_on_the_configured_interval() -> None:
    async with FakeDiscord(heartbeat_interval=0.2) as fake:
        async for world in start_world(fake):
            beats = await fake.wait_for_heartbeats(5)
            # The first beat goes out at HELLO; the rest follow the interval. A busy machine
            # delays a beat now and then (so one gap grows and the next may shrink: hence the
            # median), but the 0.2 s interval is followed, not discord.py's usual 41 s.
            gaps = [later - earlier for earlier, later in itertools.pairwise(beats[1:])]
            assert statistics.median(gaps) > 0.1 and sum(gaps) / len(gaps) < 0.5, gaps
            assert world.bot.latency < 1.0  # every beat was acknowledged
        fake.check()


async def test_bot_resumes_after_dropped_connection_and_answers(world: World) -> None:
    world.fake.drop_connection()
    await world.fake.wait_until_ready()
    assert world.fake.resumes == 1 and world.fake.connections[-1].resumed
    interaction = await world.fake.slash(
        "echo", {"text": "back"}, user_id=ALICE, channel_id=world.channel.id
    )
    followup = await interaction.wait_for("followup")
    assert followup.data["content"] == "echo: back"


async def test_message_over_discord_limits_is_refused_and_recorded(world: World) -> None:
    channel = world.bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send("x" * 2001, allowed_mentions=discord.AllowedMentions.none())
    assert refused.value.status == 400 and refused.value.code == 50035
    assert world.fake.errors == ["message body refused: content is 2001 characters (limit 2000)"]
    assert world.fake.messages() == []
    world.fake.errors.clear()


async def test_events_missed_while_disconnected_are_replayed_on_resume(world: World) -> None:
    world.fake.drop_connection()
    interaction = await world.fake.slash(
        "echo", {"text": "missed"}, user_id=ALICE, channel_id=world.channel.id
    )
    await world.fake.wait_until_ready()
    followup = await interaction.wait_for("followup")
    assert followup.data["content"] == "echo: missed"


async def test_unknown_route_is_recorded_as_error(world: World) -> None:
    with pytest.raises(discord.NotFound):
        await world.bot.http.request(discord.http.Route("GET", "/voice/regions"))
    assert world.fake.errors == ["unknown route GET /voice/regions"]
    world.fake.errors.clear()
