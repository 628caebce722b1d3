"""A fake Discord (REST API v10 + gateway websocket) on 127.0.0.1 for end-to-end bot tests.

The real discord.py talks to it unmodified: point `discord.http.Route.BASE` at
`FakeDiscord.api_base_url` (the bot does this from `discord.api_base_url`), and an
`AutoShardedClient` then takes the websocket URL from `GET /gateway/bot`. Frames go out as
plain-text JSON, which discord.py accepts next to its zlib/zstd streams.

Usage with the real bot (tests/test_fake_discord.py has a complete small example):

    async def test_x(discord_fake, make_settings):
        guild = discord_fake.add_guild("Guild")
        channel = discord_fake.add_channel(guild.id, "general")
        discord_fake.add_member(1001, "alice")
        settings = make_settings(
            discord={"api_base_url": discord_fake.api_base_url, "guild_ids": [guild.id]}
        )
        async with run_bot(TweetlikeBot(settings, service), discord_fake):
            interaction = await discord_fake.slash(
                "tweetlike", {"handle": "sample", "prompt": "My dream is"},
                user_id=1001, channel_id=channel.id,
            )
            callback = await interaction.wait_for_response()   # type 5 within 3 s?
            followup = await interaction.wait_for("followup", timeout=30)

`slash` refuses what Discord's client would never send (unknown or missing options, values
out of range, commands hidden by `default_member_permissions`: give operators a role with
that permission via `add_role`, or pass `force=True`). The bot's `on_ready` comes
`guild_ready_timeout` (2 s by default) after the last GUILD_CREATE; `run_bot` returns as
soon as the gateway session is READY, which is all interactions need.

Routes the fake does not know answer 404 and are recorded in `errors`; the `discord_fake`
fixture fails the test on teardown if any were recorded.

Layout: discord_state (shared state) <- discord_gateway (websocket) <- discord_messages
(message store) <- discord_rest (REST routes) <- discord_webhooks (interaction callbacks and
follow-ups) <- FakeDiscord here (lifecycle, world building, dispatching interactions).
discord_model holds the guild world and its payloads, discord_commands the slash-option
rules, discord_records what tests read back.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import discord
import pytest
from aiohttp import web

from fakes import WAIT_SECONDS
from fakes.discord_commands import check_visible, command_data
from fakes.discord_gateway import INTENT_GUILD_MEMBERS
from fakes.discord_model import (
    CHANNEL_TYPE_TEXT,
    DEFAULT_EVERYONE_PERMISSIONS,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
)
from fakes.discord_records import (
    INTERACTION_TYPE_AUTOCOMPLETE,
    INTERACTION_TYPE_COMMAND,
    INTERACTION_TYPE_COMPONENT,
    FakeInteraction,
)
from fakes.discord_state import API_PREFIX
from fakes.discord_webhooks import InteractionWebhooks


class FakeDiscord(InteractionWebhooks):
    """The fake server plus the world it serves (one bot, its application, guilds) and its logs."""

    async def __aenter__(self) -> FakeDiscord:
        self._routes = self._route_table()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def add_guild(
        self, name: str = "Test Guild", *, guild_id: int | None = None, owner_id: int | None = None
    ) -> FakeGuild:
        """A guild with an @everyone role and the bot as a member; the first is the default."""
        gid = guild_id or self.snowflake()
        guild = FakeGuild(id=gid, name=name, owner_id=owner_id or self.snowflake())
        guild.roles[gid] = FakeRole(
            id=gid, name="@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS, position=0
        )
        guild.members[self.application_id] = FakeMember(
            self.application_id, self.bot_user["username"], bot=True
        )
        self.guilds[gid] = guild
        if self._sessions:
            self.dispatch("GUILD_CREATE", self._guild_create(guild))
        return guild

    def add_channel(
        self, guild_id: int | None, name: str, *, channel_id: int | None = None
    ) -> FakeChannel:
        guild = self._guild(guild_id)
        channel = FakeChannel(
            id=channel_id or self.snowflake(),
            guild_id=guild.id,
            name=name,
            type=CHANNEL_TYPE_TEXT,
            position=len(guild.channels),
        )
        guild.channels[channel.id] = channel
        if self._sessions:
            self.dispatch("CHANNEL_CREATE", channel.payload())
        return channel

    def add_role(
        self,
        guild_id: int | None,
        name: str,
        *,
        permissions: int = 0,
        role_id: int | None = None,
    ) -> FakeRole:
        guild = self._guild(guild_id)
        role = FakeRole(
            id=role_id or self.snowflake(),
            name=name,
            permissions=permissions,
            position=len(guild.roles),
        )
        guild.roles[role.id] = role
        if self._sessions:
            self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def add_member(
        self,
        user_id: int,
        name: str,
        roles: list[int] | None = None,
        *,
        guild_id: int | None = None,
    ) -> FakeMember:
        guild = self._guild(guild_id)
        unknown = [role_id for role_id in roles or [] if role_id not in guild.roles]
        if unknown:
            raise LookupError(f"roles {unknown} are not in guild {guild.id}; add_role first")
        member = FakeMember(user_id=user_id, name=name, role_ids=list(roles or []))
        guild.members[user_id] = member
        if self._intents() & INTENT_GUILD_MEMBERS:
            self.dispatch("GUILD_MEMBER_ADD", {**member.payload(), "guild_id": str(guild.id)})
        return member

    def synced_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The commands as last synced (global when guild_id is None), with the ids given out."""
        return copy.deepcopy(self._commands.get(guild_id, []))

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None = None,
        subcommand: str | None = None,
        force: bool = False,
    ) -> FakeInteraction:
        """Dispatch a slash command as a member would send it; option types come from the sync.

        `subcommand` is "add" or, for a group, "group add". Invocations Discord would refuse
        (missing or invalid options, a command hidden by default_member_permissions) raise;
        `force` skips only the permission check, like an admin override in server settings.
        """
        guild = self._guild(guild_id)
        command, command_guild = self._synced_command(name, guild.id)
        if not force:
            check_visible(command, guild, user_id)
        data = command_data(
            command, command_guild, options or {}, subcommand, guild, self.application_id
        )
        return self._dispatch_interaction(
            INTERACTION_TYPE_COMMAND, data, guild, channel_id, user_id
        )

    async def autocomplete(
        self,
        name: str,
        focused: str,
        value: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None = None,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an autocomplete request while the member types `value` into `focused`."""
        guild = self._guild(guild_id)
        command, command_guild = self._synced_command(name, guild.id)
        data = command_data(
            command,
            command_guild,
            {**(options or {}), focused: value},
            subcommand,
            guild,
            self.application_id,
            focused=focused,
        )
        data.pop("resolved", None)
        return self._dispatch_interaction(
            INTERACTION_TYPE_AUTOCOMPLETE, data, guild, channel_id, user_id
        )

    async def click(
        self,
        message: dict[str, Any] | int,
        custom_id: str,
        user_id: int,
        *,
        values: list[str] | None = None,
    ) -> FakeInteraction:
        """Dispatch a component click on a message the bot sent (by message object or id)."""
        message_id = int(message["id"]) if isinstance(message, dict) else message
        try:
            current = self._messages[message_id]
        except KeyError:
            raise LookupError(f"unknown message {message_id}") from None
        component = _find_component(current.get("components", []), custom_id)
        if component is None:
            raise LookupError(f"message {message_id} has no component with custom_id {custom_id!r}")
        channel_id = int(current["channel_id"])
        channel = self._channel(channel_id)
        guild = self._guild(channel.guild_id if channel else None)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if values is not None:
            data["values"] = values
        return self._dispatch_interaction(
            INTERACTION_TYPE_COMPONENT,
            data,
            guild,
            channel_id,
            user_id,
            message=copy.deepcopy(current),
        )

    def _synced_command(self, name: str, guild_id: int) -> tuple[dict[str, Any], int | None]:
        for scope in (guild_id, None):
            for command in self._commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command, scope
        raise LookupError(f"/{name} was never synced (globally or to guild {guild_id})")

    def _dispatch_interaction(
        self,
        interaction_type: int,
        data: dict[str, Any],
        guild: FakeGuild,
        channel_id: int,
        user_id: int,
        *,
        message: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        if self.session_for(guild.id) is None:
            raise RuntimeError(
                f"no gateway session serves guild {guild.id} yet; await wait_until_ready() first"
            )
        channel = guild.channel(channel_id)
        member = guild.member(user_id)
        interaction_id = self.snowflake()
        token = f"itoken-{secrets.token_urlsafe(24)}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": interaction_type,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel_id),
            "channel": {
                **channel.payload(),
                "permissions": str(guild.permissions_of(self.application_id)),
            },
            "member": member.payload(permissions=guild.permissions_of(user_id)),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": str(guild.permissions_of(self.application_id)),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if message is not None:
            payload["message"] = message
        loop = asyncio.get_running_loop()
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=interaction_type,
            payload=payload,
            dispatched_at=loop.time(),
            signal=self._signal,
        )
        if message is not None:
            interaction.original_message_id = int(message["id"])
        self.interactions.append(interaction)
        self._interactions_by_token[token] = interaction
        self._timers.append(loop.call_later(self.ack_deadline, self._ack_deadline, interaction))
        self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _ack_deadline(self, interaction: FakeInteraction) -> None:
        if interaction.callback is None:
            interaction.failed = True
            self.failed_interactions.append(interaction)
            self._signal.notify()


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for component in components:
        if component.get("custom_id") == custom_id:
            return component
        for key in ("components", "accessory"):
            nested = component.get(key)
            if isinstance(nested, dict):
                nested = [nested]
            if isinstance(nested, list):
                found = _find_component(nested, custom_id)
                if found is not None:
                    return found
    return None


@asynccontextmanager
async def run_bot(
    client: discord.Client, fake: FakeDiscord, *, ready_timeout: float = WAIT_SECONDS
) -> AsyncIterator[discord.Client]:
    """Run `client.start()` against the fake until the gateway session is READY; close after.

    If the client dies first (bad token, unknown route...), its exception is raised here.
    """
    task = asyncio.create_task(client.start(fake.token), name="bot under test")
    ready = asyncio.create_task(fake.wait_until_ready(ready_timeout))
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()
            raise AssertionError("the bot stopped before its gateway session was ready")
        ready.result()
        yield client
    finally:
        ready.cancel()
        await client.close()
        if task.done() and not task.cancelled():
            task.result()
        else:
            await asyncio.wait_for(task, timeout=WAIT_SECONDS)


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord; restores discord.py's REST base and fails on unknown routes."""
    original_base = discord.http.Route.BASE
    try:
        async with FakeDiscord() as fake:
            yield fake
    finally:
        discord.http.Route.BASE = original_base
    fake.check()
