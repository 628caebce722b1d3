"""A fake Discord (REST API v10 + gateway websocket) on 127.0.0.1 for end-to-end bot tests.

The real discord.py talks to it unmodified: point `discord.http.Route.BASE` at
`FakeDiscord.api_base_url` (the bot does this from `discord.api_base_url`), and an
`AutoShardedClient` then takes the websocket URL from `GET /gateway/bot`. Frames go out as
plain-text JSON, which discord.py accepts next to its zlib/zstd streams.

Usage (see tests/test_fake_discord.py):

    async def test_x(discord_fake):
        guild = discord_fake.add_guild("Guild")
        channel = discord_fake.add_channel(guild.id, "general")
        discord_fake.add_member(1001, "alice")
        async with run_bot(make_my_bot(discord_fake.api_base_url), discord_fake):
            interaction = await discord_fake.slash("ping", channel_id=channel.id, user_id=1001)
            callback = await interaction.wait_for_response()

Routes the fake does not know answer 404 and are recorded in `errors`; the `discord_fake`
fixture fails the test on teardown if any were recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord
import pytest
from aiohttp import web

from fakes.discord_commands import check_visible, command_data
from fakes.discord_model import (
    CHANNEL_TYPE_TEXT,
    DEFAULT_EVERYONE_PERMISSIONS,
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    MESSAGE_TYPE_CHAT_INPUT_COMMAND,
    MESSAGE_TYPE_DEFAULT,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    SnowflakeFactory,
    iso_now,
    user_payload,
)
from fakes.discord_records import (
    ALLOWED_CALLBACKS,
    CALLBACK_AUTOCOMPLETE,
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_UPDATE_MESSAGE,
    INTERACTION_TYPE_AUTOCOMPLETE,
    INTERACTION_TYPE_COMMAND,
    INTERACTION_TYPE_COMPONENT,
    ChangeSignal,
    FakeInteraction,
    GatewayConnection,
    InteractionEvent,
    MessageEvent,
    Rejection,
)

API_PREFIX = "/api/v10"
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9

Handler = Callable[[web.Request, dict[str, str], Any], Awaitable[web.Response]]


class DiscordHTTPError(Exception):
    """Turned into Discord's JSON error body, so discord.py raises its matching HTTPException."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only decodes bodies whose content-type is exactly "application/json".
    return web.Response(
        status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )


class FakeDiscord:
    """The fake server plus the world it serves (one bot, its application, guilds) and its logs."""

    def __init__(
        self,
        *,
        heartbeat_interval: float = 0.5,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60,
        bot_name: str = "tweetlike",
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.snowflake = SnowflakeFactory()
        self.token = f"fake-bot-token-{secrets.token_hex(8)}"
        self.application_id = self.snowflake()
        self.bot_user = {
            **user_payload(self.application_id, bot_name, bot=True),
            "verified": True,
            "mfa_enabled": False,
        }
        self.guilds: dict[int, FakeGuild] = {}
        self.errors: list[str] = []
        self.rejected: list[Rejection] = []
        self.requests: list[tuple[str, str]] = []
        self.connections: list[GatewayConnection] = []
        self.failed_interactions: list[FakeInteraction] = []
        self.interactions: list[FakeInteraction] = []
        self.message_events: list[MessageEvent] = []
        self.resumes = 0
        self._signal = ChangeSignal()
        self._sent_payloads: list[dict[str, Any]] = []
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self._session_id: str | None = None
        self._seq = 0
        self._dispatch_log: list[dict[str, Any]] = []
        self._live: GatewayConnection | None = None
        self._live_transport: asyncio.Transport | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._routes = self._route_table()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    def check(self) -> None:
        """Fail loudly if discord.py called a route the fake does not know or broke protocol."""
        if self.errors:
            raise AssertionError("fake Discord saw errors:\n" + "\n".join(self.errors))

    # ------------------------------------------------------------------ the world

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
        if self._session_id is not None:
            self.dispatch("GUILD_CREATE", self._guild_create(guild))
        return guild

    def _intents(self) -> int:
        live = self._live
        return (live.identify or {}).get("intents", 0) if live is not None else 0

    def _guild_create(self, guild: FakeGuild) -> dict[str, Any]:
        if self._intents() & INTENT_GUILD_MEMBERS:
            return guild.payload()
        return guild.payload(only_member=self.application_id)

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
        if self._session_id is not None:
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
        if self._session_id is not None:
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

    def _guild(self, guild_id: int | None) -> FakeGuild:
        if guild_id is None:
            if not self.guilds:
                raise LookupError("no guild yet; call add_guild first")
            return next(iter(self.guilds.values()))
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise LookupError(f"unknown guild {guild_id}") from None

    def _channel(self, channel_id: int) -> FakeChannel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return None

    # ------------------------------------------------------------------ what tests read

    def sent_payloads(self) -> list[dict[str, Any]]:
        """Every JSON body the bot sent that creates or edits a message, in order."""
        return copy.deepcopy(self._sent_payloads)

    def heartbeats(self) -> list[float]:
        """Arrival times (event-loop clock) of every heartbeat on every connection."""
        return [beat for connection in self.connections for beat in connection.heartbeats]

    def synced_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The commands as last synced (global when guild_id is None), with the ids given out."""
        return copy.deepcopy(self._commands.get(guild_id, []))

    def messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Current (not deleted) messages, oldest first."""
        return [
            copy.deepcopy(message)
            for message in self._messages.values()
            if channel_id is None or int(message["channel_id"]) == channel_id
        ]

    async def wait_until_ready(self, timeout: float = 10.0) -> GatewayConnection:
        """Until a live gateway connection has had READY + GUILD_CREATEs, or RESUMED."""

        def probe() -> GatewayConnection | None:
            live = self._live
            return live if live is not None and live.ready else None

        return await self._signal.wait_for(probe, timeout, "a READY or RESUMED gateway session")

    async def wait_for_heartbeats(self, count: int, timeout: float = 10.0) -> list[float]:
        def probe() -> list[float] | None:
            beats = self.heartbeats()
            return beats if len(beats) >= count else None

        return await self._signal.wait_for(probe, timeout, f"{count} heartbeats")

    async def wait_for_rejection(self, code: int, timeout: float = 5.0) -> Rejection:
        """The first request answered with Discord error `code` (10062, 40060, 50027...)."""
        return await self._signal.wait_for(
            lambda: next((r for r in self.rejected if r.code == code), None),
            timeout,
            f"a request rejected with code {code}",
        )

    async def wait_for_message(
        self,
        channel_id: int | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
        *,
        kinds: tuple[str, ...] = ("create", "edit"),
    ) -> dict[str, Any]:
        """The first message created or edited (by any route) that matches, as it was then."""

        def probe() -> dict[str, Any] | None:
            for event in self.message_events:
                message = event.message
                if event.kind not in kinds:
                    continue
                if channel_id is not None and int(message["channel_id"]) != channel_id:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        where = f"channel {channel_id}" if channel_id is not None else "any channel"
        return await self._signal.wait_for(probe, timeout, f"a message ({kinds}) in {where}")

    # ------------------------------------------------------------------ interactions

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
        if self._session_id is None:
            raise RuntimeError("no gateway session yet; await wait_until_ready() first")
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

    # ------------------------------------------------------------------ gateway

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) with the next sequence number; kept for RESUME replays."""
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        self._dispatch_log.append(frame)
        if self._live is not None:
            self._live.outbox.put_nowait(frame)

    def drop_connection(self) -> None:
        """Cut the live websocket without a close frame, as a network failure would."""
        if self._live is None or self._live_transport is None:
            raise RuntimeError("no live gateway connection to drop")
        self._live_transport.abort()
        self._live.ready = False
        self._live = None
        self._live_transport = None
        self._signal.notify()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        connection = GatewayConnection(query=dict(request.query), opened_at=loop.time())
        self.connections.append(connection)
        if request.query.get("v") != "10" or request.query.get("encoding") != "json":
            self.errors.append(f"gateway opened with unexpected query {dict(request.query)}")
        writer = asyncio.create_task(self._write_frames(ws, connection))
        hello = {"heartbeat_interval": int(self.heartbeat_interval * 1000)}
        connection.outbox.put_nowait({"op": 10, "s": None, "t": None, "d": hello})
        try:
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    await self._on_gateway_frame(ws, request, connection, json.loads(frame.data))
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    self.errors.append("gateway client sent a binary frame")
        finally:
            writer.cancel()
            connection.closed = True
            if self._live is connection:
                self._live = None
                self._live_transport = None
            self._signal.notify()
        return ws

    async def _write_frames(self, ws: web.WebSocketResponse, connection: GatewayConnection) -> None:
        # One writer per socket keeps frames in sequence order whatever task queued them.
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                frame = await connection.outbox.get()
                await ws.send_str(json.dumps(frame))

    async def _on_gateway_frame(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        connection: GatewayConnection,
        frame: dict[str, Any],
    ) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == 1:
            connection.heartbeats.append(asyncio.get_running_loop().time())
            connection.outbox.put_nowait({"op": 11, "s": None, "t": None, "d": None})
            self._signal.notify()
        elif op == 2:
            await self._identify(ws, request, connection, data)
        elif op == 6:
            await self._resume(ws, request, connection, data)
        elif op == 8:
            self._request_members(connection, data)
        elif op in (3, 4):
            return
        else:
            self.errors.append(f"gateway client sent unknown op {op}: {frame}")

    async def _identify(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        connection: GatewayConnection,
        data: dict[str, Any],
    ) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        connection.identify = data
        shard = data.get("shard", [0, 1])
        self._session_id = uuid.uuid4().hex
        self._seq = 0
        self._dispatch_log = []
        self._go_live(request, connection)
        self.dispatch(
            "READY",
            {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
                "session_id": self._session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": shard,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "user_settings": {},
                "_trace": ["fake-discord"],
            },
        )
        for guild in self.guilds.values():
            self.dispatch("GUILD_CREATE", self._guild_create(guild))
        connection.ready = True
        self._signal.notify()

    async def _resume(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        connection: GatewayConnection,
        data: dict[str, Any],
    ) -> None:
        if data.get("token") != self.token or data.get("session_id") != self._session_id:
            self.errors.append(f"RESUME of unknown session {data.get('session_id')}")
            # discord.py answers INVALID_SESSION(false) by dialing the real gateway; close instead.
            await ws.close(code=4006, message=b"Session no longer valid.")
            return
        self._go_live(request, connection)
        connection.resumed = True
        last_seen = data.get("seq") or 0
        for frame in self._dispatch_log:
            if frame["s"] > last_seen:
                connection.outbox.put_nowait(frame)
        self.resumes += 1
        self.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        connection.ready = True
        self._signal.notify()

    def _go_live(self, request: web.Request, connection: GatewayConnection) -> None:
        self._live = connection
        self._live_transport = request.transport  # type: ignore[assignment]

    def _request_members(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        guild = self._guild(int(data["guild_id"]))
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [member.payload() for member in guild.members.values()],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ REST

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler, bool]]:
        """(method, path pattern, handler, needs bot auth); webhook routes carry their token."""
        app = r"(?P<app>\d+)"
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/users/(?P<user>\d+)", self._get_user, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("GET", r"/applications/@me", self._get_application, True),
            ("GET", r"/gateway/bot", self._get_gateway_bot, True),
            ("GET", r"/gateway", self._get_gateway, False),
            ("PUT", rf"/applications/{app}/commands", self._put_commands, True),
            ("GET", rf"/applications/{app}/commands", self._get_commands, True),
            (
                "PUT",
                rf"/applications/{app}/guilds/(?P<guild>\d+)/commands",
                self._put_commands,
                True,
            ),
            (
                "GET",
                rf"/applications/{app}/guilds/(?P<guild>\d+)/commands",
                self._get_commands,
                True,
            ),
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback, False),
            ("POST", hook, self._post_followup, False),
            ("GET", hook + r"/messages/(?P<mid>@original|\d+)", self._get_hook_message, False),
            ("PATCH", hook + r"/messages/(?P<mid>@original|\d+)", self._edit_hook_message, False),
            (
                "DELETE",
                hook + r"/messages/(?P<mid>@original|\d+)",
                self._delete_hook_message,
                False,
            ),
            ("GET", r"/channels/(?P<channel>\d+)", self._get_channel, True),
            ("POST", r"/channels/(?P<channel>\d+)/typing", self._typing, True),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._post_message, True),
            ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)", self._get_message, True),
            (
                "PATCH",
                r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)",
                self._edit_message,
                True,
            ),
            (
                "DELETE",
                r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)",
                self._delete_message,
                True,
            ),
            ("GET", r"/guilds/(?P<guild>\d+)", self._get_guild, True),
            ("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self._get_member, True),
        ]
        return [(method, re.compile(pattern + "$"), h, auth) for method, pattern, h, auth in table]

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path))
        for method, pattern, handler, needs_auth in self._routes:
            match = pattern.match(path)
            if method != request.method or match is None:
                continue
            try:
                if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise DiscordHTTPError(401, 0, "401: Unauthorized")
                body = await _read_body(request)
                return await handler(request, match.groupdict(), body)
            except DiscordHTTPError as exc:
                self.rejected.append(
                    Rejection(request.method, path, exc.status, exc.code, exc.message)
                )
                self._signal.notify()
                return json_response({"message": exc.message, "code": exc.code}, exc.status)
        self.errors.append(f"unknown route {request.method} {path}")
        self._signal.notify()
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    async def _get_me(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        return json_response(self.bot_user)

    async def _get_user(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        user_id = int(params["user"])
        for guild in self.guilds.values():
            if user_id in guild.members:
                return json_response(guild.members[user_id].user())
        raise DiscordHTTPError(404, 10013, "Unknown User")

    async def _get_application(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        owner = user_payload(self.snowflake(), "owner")
        return json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "bot": self.bot_user,
                "owner": owner,
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
            }
        )

    async def _get_gateway_bot(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        return json_response(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_gateway(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        return json_response({"url": self.gateway_url})

    def _check_app(self, params: dict[str, str]) -> None:
        if int(params["app"]) != self.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")

    async def _put_commands(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        self._check_app(params)
        guild_id = int(params["guild"]) if "guild" in params else None
        if guild_id is not None and guild_id not in self.guilds:
            raise DiscordHTTPError(403, 50001, "Missing Access")
        if not isinstance(body, list):
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        previous = {c["name"]: c["id"] for c in self._commands.get(guild_id, [])}
        commands = []
        for command in body:
            stored = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": previous.get(command["name"]) or str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            commands.append(stored)
        self._commands[guild_id] = commands
        self._signal.notify()
        return json_response(commands)

    async def _get_commands(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        self._check_app(params)
        guild_id = int(params["guild"]) if "guild" in params else None
        return json_response(self._commands.get(guild_id, []))

    # ---- interactions

    def _elapsed(self, interaction: FakeInteraction) -> float:
        return asyncio.get_running_loop().time() - interaction.dispatched_at

    def _record(self, interaction: FakeInteraction, event: InteractionEvent) -> None:
        interaction.events.append(event)
        self._signal.notify()

    async def _callback(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._interactions_by_token.get(params["token"])
        if interaction is None or interaction.id != int(params["id"]):
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        elapsed = self._elapsed(interaction)
        if elapsed > self.ack_deadline:
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            raise DiscordHTTPError(400, 40060, "Interaction has already been acknowledged.")
        callback_type = body.get("type")
        if callback_type not in ALLOWED_CALLBACKS[interaction.type]:
            self.errors.append(
                f"callback type {callback_type} is not valid for interaction type "
                f"{interaction.type}"
            )
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        data = body.get("data") or {}
        message: dict[str, Any] | None = None
        if callback_type == CALLBACK_MESSAGE:
            self._sent_payloads.append(copy.deepcopy(data))
            message = self._create_message(
                interaction.payload["channel_id"],
                data,
                flags=data.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL,
                interaction=interaction,
                via="interaction",
            )
            interaction.original_message_id = int(message["id"])
        elif callback_type == CALLBACK_DEFERRED_MESSAGE:
            flags = MESSAGE_FLAG_LOADING | (data.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL)
            message = self._create_message(
                interaction.payload["channel_id"],
                {"content": ""},
                flags=flags,
                interaction=interaction,
                via="interaction",
            )
            interaction.original_message_id = int(message["id"])
        elif callback_type == CALLBACK_UPDATE_MESSAGE:
            self._sent_payloads.append(copy.deepcopy(data))
            message = self._edit(interaction.original_message_id, data, via="interaction")
        elif callback_type == CALLBACK_AUTOCOMPLETE and not isinstance(data.get("choices"), list):
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        self._record(
            interaction, InteractionEvent("callback", elapsed, body, copy.deepcopy(message))
        )
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": callback_type == CALLBACK_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(
                    message and message["flags"] & MESSAGE_FLAG_EPHEMERAL
                ),
            },
            "resource": {"type": callback_type},
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"]["message"] = message
        elif callback_type == CALLBACK_DEFERRED_UPDATE and interaction.original_message_id:
            response["interaction"]["response_message_id"] = str(interaction.original_message_id)
        return json_response(response)

    def _hook_interaction(self, params: dict[str, str]) -> FakeInteraction:
        interaction = self._interactions_by_token.get(params["token"])
        if int(params["app"]) != self.application_id or interaction is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        if self._elapsed(interaction) > self.token_lifetime:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token")
        if interaction.callback is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        return interaction

    def _hook_message_id(self, interaction: FakeInteraction, mid: str) -> int:
        if mid == "@original":
            if interaction.original_message_id is None:
                raise DiscordHTTPError(404, 10008, "Unknown Message")
            return interaction.original_message_id
        message_id = int(mid)
        owned = {interaction.original_message_id}
        owned.update(int(e.message["id"]) for e in interaction.followups() if e.message)
        if message_id not in owned or message_id not in self._messages:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return message_id

    async def _post_followup(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        self._sent_payloads.append(copy.deepcopy(body))
        original = self._messages.get(interaction.original_message_id or 0)
        if original is not None and original["flags"] & MESSAGE_FLAG_LOADING:
            # Discord turns the first follow-up after a deferred "thinking" reply into that reply.
            message = self._edit(int(original["id"]), body, via="interaction", finish_loading=True)
        else:
            message = self._create_message(
                interaction.payload["channel_id"],
                body,
                flags=body.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL,
                interaction=interaction,
                via="interaction",
            )
        self._record(
            interaction,
            InteractionEvent("followup", self._elapsed(interaction), body, copy.deepcopy(message)),
        )
        if request.query.get("wait") in ("true", "1", "True"):
            return json_response(message)
        return web.Response(status=204)

    async def _get_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        return json_response(self._messages[self._hook_message_id(interaction, params["mid"])])

    async def _edit_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        message_id = self._hook_message_id(interaction, params["mid"])
        self._sent_payloads.append(copy.deepcopy(body))
        message = self._edit(message_id, body, via="interaction", finish_loading=True)
        kind = "edit_original" if params["mid"] == "@original" else "edit_followup"
        self._record(
            interaction,
            InteractionEvent(kind, self._elapsed(interaction), body, copy.deepcopy(message)),
        )
        return json_response(message)

    async def _delete_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        message_id = self._hook_message_id(interaction, params["mid"])
        message = self._delete(message_id, via="interaction")
        kind = "delete_original" if params["mid"] == "@original" else "delete_followup"
        self._record(interaction, InteractionEvent(kind, self._elapsed(interaction), {}, message))
        return web.Response(status=204)

    # ---- channels and messages

    def _known_channel(self, params: dict[str, str]) -> FakeChannel:
        channel = self._channel(int(params["channel"]))
        if channel is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel")
        return channel

    def _known_message(self, params: dict[str, str]) -> int:
        channel = self._known_channel(params)
        message_id = int(params["mid"])
        message = self._messages.get(message_id)
        if message is None or int(message["channel_id"]) != channel.id:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return message_id

    async def _get_channel(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        return json_response(self._known_channel(params).payload())

    async def _typing(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        self._known_channel(params)
        return web.Response(status=204)

    async def _post_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        channel = self._known_channel(params)
        if not any(body.get(key) for key in ("content", "embeds", "components", "attachments")):
            raise DiscordHTTPError(400, 50006, "Cannot send an empty message")
        self._sent_payloads.append(copy.deepcopy(body))
        message = self._create_message(str(channel.id), body, flags=0, via="channel")
        return json_response(message)

    async def _get_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        return json_response(self._messages[self._known_message(params)])

    async def _edit_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        message_id = self._known_message(params)
        self._sent_payloads.append(copy.deepcopy(body))
        return json_response(self._edit(message_id, body, via="channel"))

    async def _delete_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        self._delete(self._known_message(params), via="channel")
        return web.Response(status=204)

    async def _get_guild(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        guild = self.guilds.get(int(params["guild"]))
        if guild is None:
            raise DiscordHTTPError(404, 10004, "Unknown Guild")
        payload = guild.payload()
        for key in ("members", "channels", "threads", "voice_states", "presences"):
            payload.pop(key)
        return json_response(payload)

    async def _get_member(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        guild = self.guilds.get(int(params["guild"]))
        if guild is None:
            raise DiscordHTTPError(404, 10004, "Unknown Guild")
        member = guild.members.get(int(params["user"]))
        if member is None:
            raise DiscordHTTPError(404, 10007, "Unknown Member")
        return json_response(member.payload())

    def _create_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        *,
        flags: int,
        via: str,
        interaction: FakeInteraction | None = None,
    ) -> dict[str, Any]:
        message_type = MESSAGE_TYPE_DEFAULT
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": self.bot_user,
            "content": body.get("content") or "",
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": body.get("attachments") or [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "reactions": [],
            "pinned": False,
            "flags": flags,
            "nonce": body.get("nonce"),
        }
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
            message_type = 19
        if interaction is not None:
            member = interaction.payload["member"]
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
            message["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": member["user"],
                "authorizing_integration_owners": {"0": interaction.payload["guild_id"]},
            }
            if interaction.type == INTERACTION_TYPE_COMMAND:
                message_type = MESSAGE_TYPE_CHAT_INPUT_COMMAND
                message["interaction_metadata"]["name"] = interaction.payload["data"]["name"]
        message["type"] = message_type
        self._messages[int(message["id"])] = message
        self._message_event("create", message, via)
        return message

    def _edit(
        self,
        message_id: int | None,
        body: dict[str, Any],
        *,
        via: str,
        finish_loading: bool = False,
    ) -> dict[str, Any]:
        message = self._messages.get(message_id or 0)
        if message is None:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        for key in ("content", "embeds", "components", "attachments"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if finish_loading:
            message["flags"] &= ~MESSAGE_FLAG_LOADING
        message["edited_timestamp"] = iso_now()
        self._message_event("edit", message, via)
        return message

    def _delete(self, message_id: int, *, via: str) -> dict[str, Any]:
        message = self._messages.pop(message_id)
        self._message_event("delete", message, via)
        return copy.deepcopy(message)

    def _message_event(self, kind: str, message: dict[str, Any], via: str) -> None:
        self.message_events.append(MessageEvent.snapshot(kind, message, via))
        self._signal.notify()
        self._gateway_message_event(kind, message)

    def _gateway_message_event(self, kind: str, message: dict[str, Any]) -> None:
        """Echo the bot's own non-ephemeral messages on the gateway if it asked for them."""
        if not self._intents() & INTENT_GUILD_MESSAGES or message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            return
        channel = self._channel(int(message["channel_id"]))
        if channel is None:
            return
        guild_id = str(channel.guild_id)
        if kind == "delete":
            self.dispatch(
                "MESSAGE_DELETE",
                {"id": message["id"], "channel_id": message["channel_id"], "guild_id": guild_id},
            )
            return
        event = "MESSAGE_CREATE" if kind == "create" else "MESSAGE_UPDATE"
        bot_member = self.guilds[channel.guild_id].members[self.application_id].payload()
        bot_member.pop("user")
        self.dispatch(event, {**copy.deepcopy(message), "guild_id": guild_id, "member": bot_member})


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


async def _read_body(request: web.Request) -> Any:
    """JSON bodies as-is; multipart bodies (file uploads) as their payload_json plus attachments."""
    if not request.body_exists:
        return {}
    if request.content_type == "application/json":
        return await request.json()
    if request.content_type.startswith("multipart/"):
        payload: dict[str, Any] = {}
        attachments: list[dict[str, Any]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.filename:
                content = await part.read()
                attachments.append({"filename": part.filename, "size": len(content)})
        described = payload.get("attachments") or []
        payload["attachments"] = [
            {
                "id": str(index),
                "filename": upload["filename"],
                "size": upload["size"],
                "url": f"https://cdn.example.invalid/{upload['filename']}",
                "proxy_url": f"https://cdn.example.invalid/{upload['filename']}",
                **(
                    {"description": described[index].get("description")}
                    if index < len(described)
                    else {}
                ),
            }
            for index, upload in enumerate(attachments)
        ]
        return payload
    return {}


@asynccontextmanager
async def run_bot(
    client: discord.Client, fake: FakeDiscord, *, ready_timeout: float = 10.0
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
            await asyncio.wait_for(task, timeout=5.0)


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
