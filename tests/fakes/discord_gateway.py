"""The gateway websocket side of the fake Discord: HELLO, IDENTIFY/READY, RESUME, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from fakes import WAIT_SECONDS
from fakes.discord_model import (
    FakeGuild,
)
from fakes.discord_records import (
    GatewayConnection,
)
from fakes.discord_state import FakeDiscordState

INTENT_GUILD_MEMBERS = 1 << 1


class GatewayServer(FakeDiscordState):
    """One session at a time (one shard); dispatches are numbered and kept for RESUME replays."""

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

    def heartbeats(self) -> list[float]:
        """Arrival times (event-loop clock) of every heartbeat on every connection."""
        return [beat for connection in self.connections for beat in connection.heartbeats]

    async def wait_until_ready(self, timeout: float = WAIT_SECONDS) -> GatewayConnection:
        """Until a live gateway connection has had READY + GUILD_CREATEs, or RESUMED."""

        def probe() -> GatewayConnection | None:
            live = self._live
            return live if live is not None and live.ready else None

        return await self._signal.wait_for(probe, timeout, "a READY or RESUMED gateway session")

    async def wait_for_heartbeats(self, count: int, timeout: float = WAIT_SECONDS) -> list[float]:
        def probe() -> list[float] | None:
            beats = self.heartbeats()
            return beats if len(beats) >= count else None

        return await self._signal.wait_for(probe, timeout, f"{count} heartbeats")

    def _intents(self) -> int:
        live = self._live
        return (live.identify or {}).get("intents", 0) if live is not None else 0

    def _guild_create(self, guild: FakeGuild) -> dict[str, Any]:
        if self._intents() & INTENT_GUILD_MEMBERS:
            return guild.payload()
        return guild.payload(only_member=self.application_id)

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
            if isinstance(data, int) and data > self._seq:
                self.errors.append(
                    f"heartbeat acknowledges sequence {data} > last sent {self._seq}"
                )
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
