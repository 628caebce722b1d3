"""The REST side of the fake Discord: login, gateway URL, command sync, channels and guilds.

Requests are matched against a route table; anything else answers 404 and is recorded in
`errors` so the test fails loudly with the method and path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from aiohttp import web

from fakes import WAIT_SECONDS
from fakes.discord_messages import MessageStore
from fakes.discord_model import (
    MESSAGE_FLAG_EPHEMERAL,
    FakeChannel,
    user_payload,
)
from fakes.discord_records import (
    Rejection,
)
from fakes.discord_state import DiscordHTTPError, Handler, Route, json_response


class RestApi(MessageStore):
    def _route_table(self) -> list[Route]:
        """(method, path pattern, handler, needs bot auth)."""
        app = r"(?P<app>\d+)"
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
        outage = self._outage_status(request.method, path)
        if outage is not None:
            self.rejected.append(Rejection(request.method, path, outage, 0, "server error"))
            self._signal.notify()
            return web.Response(status=outage, text=f"error code: {outage}")
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

    async def wait_for_rejection(self, code: int, timeout: float = WAIT_SECONDS) -> Rejection:
        """The first request answered with Discord error `code` (10062, 40060, 50027...)."""
        return await self._signal.wait_for(
            lambda: next((r for r in self.rejected if r.code == code), None),
            timeout,
            f"a request rejected with code {code}",
        )

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
                "shards": self.recommended_shards,
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
        if message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            # Ephemeral replies are reachable only through their interaction webhook.
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
        self._accept_body(body, creating=True)
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
        self._accept_body(body, creating=False)
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
