"""State shared by every part of the fake Discord: the bot, the world, logs, the change signal."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fakes.discord_model import (
    FakeChannel,
    FakeGuild,
    SnowflakeFactory,
    user_payload,
)

if TYPE_CHECKING:
    from fakes.discord_gateway import GatewaySession

from fakes.discord_records import (
    ChangeSignal,
    FakeInteraction,
    GatewayConnection,
    InteractionEvent,
    MessageEvent,
    Rejection,
)

API_PREFIX = "/api/v10"

Handler = Callable[[web.Request, dict[str, str], Any], Awaitable[web.Response]]
Route = tuple[str, re.Pattern[str], Handler, bool]


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


class FakeDiscordState:
    """Everything the gateway, REST and interaction parts read and write, plus shared lookups."""

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
        self._sessions: dict[int, GatewaySession] = {}  # by shard id
        self.recommended_shards = 1  # what GET /gateway/bot recommends
        self._timers: list[asyncio.TimerHandle] = []
        self._routes: list[Route] = []
        self._outages: dict[tuple[str, str], list[int]] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    def fail_next(self, method: str, path: str, statuses: list[int]) -> None:
        """Answer the next requests to ``method path`` (e.g. ``GET /users/@me``) with these
        HTTP errors, one per request in order, as an outage would; then serve again.

        The body is plain text, as the error pages of the proxy in front of Discord are.
        """
        if any(status < 400 for status in statuses):
            raise ValueError(f"fail_next answers with HTTP errors (4xx, 5xx), not {statuses}")
        self._outages.setdefault((method.upper(), path), []).extend(statuses)

    def _outage_status(self, method: str, path: str) -> int | None:
        pending = self._outages.get((method, path))
        return pending.pop(0) if pending else None

    def check(self) -> None:
        """Fail loudly if discord.py called a route the fake does not know or broke protocol."""
        if self.errors:
            raise AssertionError("fake Discord saw errors:\n" + "\n".join(self.errors))

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

    def _elapsed(self, interaction: FakeInteraction) -> float:
        return asyncio.get_running_loop().time() - interaction.dispatched_at

    def _record(self, interaction: FakeInteraction, event: InteractionEvent) -> None:
        interaction.events.append(event)
        self._signal.notify()
