"""The gateway websocket side of the fake Discord: HELLO, IDENTIFY/READY, RESUME, heartbeats.

Several shards may be connected at once, as Discord serves a sharded bot: each IDENTIFY names
``shard: [id, count]`` (``[0, 1]`` when absent) and starts that shard's session. A guild
belongs to shard ``(guild_id >> 22) % count``: only that session gets the guild in READY,
its GUILD_CREATE and every event about it, interactions included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
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


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that serves a guild, by Discord's rule."""
    return (guild_id >> 22) % shard_count


@dataclass
class GatewaySession:
    """One shard's session: its numbered dispatches (kept for RESUME) and live connection."""

    shard_id: int
    shard_count: int
    session_id: str
    identify: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    dispatch_log: list[dict[str, Any]] = field(default_factory=list)
    live: GatewayConnection | None = None
    transport: asyncio.Transport | None = None

    def serves(self, guild_id: int) -> bool:
        return shard_of(guild_id, self.shard_count) == self.shard_id


class GatewayServer(FakeDiscordState):
    """One session per shard; dispatches are numbered per session and kept for RESUME."""

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) to the session of the guild it is about (kept for RESUME).

        An event about a guild no connected shard serves is dropped, as the shard's IDENTIFY
        will deliver that guild's state anyway.
        """
        guild_id = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        session = self.session_for(int(guild_id)) if guild_id is not None else None
        if session is not None:
            self._send(session, event, data)

    def guild_id_on_shard(self, shard_id: int, shard_count: int) -> int:
        """A fresh snowflake for a guild that shard ``shard_id`` of ``shard_count`` serves."""
        while shard_of(candidate := self.snowflake(), shard_count) != shard_id:
            pass
        return candidate

    def session_for(self, guild_id: int) -> GatewaySession | None:
        return next((s for s in self._sessions.values() if s.serves(guild_id)), None)

    def _send(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.dispatch_log.append(frame)
        if session.live is not None:
            session.live.outbox.put_nowait(frame)

    def drop_connection(self, shard_id: int | None = None) -> None:
        """Cut a live websocket without a close frame, as a network failure would.

        ``shard_id`` picks the shard when several are connected.
        """
        live = [s for s in self._sessions.values() if s.live is not None]
        if shard_id is not None:
            live = [s for s in live if s.shard_id == shard_id]
        if len(live) != 1 or live[0].transport is None or live[0].live is None:
            raise RuntimeError(f"no single live gateway connection to drop (shard {shard_id})")
        session = live[0]
        session.transport.abort()
        session.live.ready = False
        session.live = None
        session.transport = None
        self._signal.notify()

    def ready_shards(self) -> dict[int, GatewayConnection]:
        """The shards whose connection is live and READY (or RESUMED), by shard id."""
        return {
            s.shard_id: s.live
            for s in self._sessions.values()
            if s.live is not None and s.live.ready
        }

    async def wait_for_shards(
        self, shard_ids: list[int], timeout: float = WAIT_SECONDS
    ) -> dict[int, GatewayConnection]:
        """Until every shard in ``shard_ids`` has a READY (or RESUMED) live connection."""

        def probe() -> dict[int, GatewayConnection] | None:
            ready = self.ready_shards()
            return ready if all(shard in ready for shard in shard_ids) else None

        return await self._signal.wait_for(probe, timeout, f"shards {shard_ids} to be ready")

    def heartbeats(self) -> list[float]:
        """Arrival times (event-loop clock) of every heartbeat on every connection."""
        return [beat for connection in self.connections for beat in connection.heartbeats]

    async def wait_until_ready(self, timeout: float = WAIT_SECONDS) -> GatewayConnection:
        """Until a live gateway connection has had READY + GUILD_CREATEs, or RESUMED."""

        def probe() -> GatewayConnection | None:
            return next(iter(self.ready_shards().values()), None)

        return await self._signal.wait_for(probe, timeout, "a READY or RESUMED gateway session")

    async def wait_for_heartbeats(self, count: int, timeout: float = WAIT_SECONDS) -> list[float]:
        def probe() -> list[float] | None:
            beats = self.heartbeats()
            return beats if len(beats) >= count else None

        return await self._signal.wait_for(probe, timeout, f"{count} heartbeats")

    def _intents(self) -> int:
        """The intents the bot identified with (every shard of one bot asks for the same)."""
        for session in self._sessions.values():
            if session.live is not None:
                return int(session.identify.get("intents", 0))
        return 0

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
            for session in self._sessions.values():
                if session.live is connection:
                    session.live = None
                    session.transport = None
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
            # Before its RESUME a new connection belongs to no session yet: any may be it.
            session = self._session_of(connection)
            sessions = [session] if session is not None else self._sessions.values()
            last_sent = max((s.seq for s in sessions), default=0)
            if isinstance(data, int) and data > last_sent:
                self.errors.append(
                    f"heartbeat acknowledges sequence {data} > last sent {last_sent}"
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
        shard_id, shard_count = data.get("shard", [0, 1])
        if not 0 <= shard_id < shard_count:
            self.errors.append(f"IDENTIFY with shard {[shard_id, shard_count]} out of range")
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        counts = {s.shard_count for s in self._sessions.values() if s.shard_id != shard_id}
        if counts - {shard_count}:
            self.errors.append(
                f"shard {shard_id} identified with count {shard_count}, others {counts}"
            )
            await ws.close(code=4011, message=b"Sharding required.")
            return
        session = GatewaySession(shard_id, shard_count, uuid.uuid4().hex, identify=data)
        self._sessions[shard_id] = session
        self._go_live(session, request, connection)
        guilds = [gid for gid in self.guilds if session.serves(gid)]
        self._send(
            session,
            "READY",
            {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": [shard_id, shard_count],
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "user_settings": {},
                "_trace": ["fake-discord"],
            },
        )
        for gid in guilds:
            self._send(session, "GUILD_CREATE", self._guild_create(self.guilds[gid]))
        connection.ready = True
        self._signal.notify()

    async def _resume(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        connection: GatewayConnection,
        data: dict[str, Any],
    ) -> None:
        session = next(
            (s for s in self._sessions.values() if s.session_id == data.get("session_id")), None
        )
        if data.get("token") != self.token or session is None:
            self.errors.append(f"RESUME of unknown session {data.get('session_id')}")
            # discord.py answers INVALID_SESSION(false) by dialing the real gateway; close instead.
            await ws.close(code=4006, message=b"Session no longer valid.")
            return
        self._go_live(session, request, connection)
        connection.resumed = True
        last_seen = data.get("seq") or 0
        for frame in session.dispatch_log:
            if frame["s"] > last_seen:
                connection.outbox.put_nowait(frame)
        self.resumes += 1
        self._send(session, "RESUMED", {"_trace": ["fake-discord"]})
        connection.ready = True
        self._signal.notify()

    def _go_live(
        self, session: GatewaySession, request: web.Request, connection: GatewayConnection
    ) -> None:
        connection.shard = (session.shard_id, session.shard_count)
        session.live = connection
        session.transport = request.transport  # type: ignore[assignment]

    def _session_of(self, connection: GatewayConnection) -> GatewaySession | None:
        return next((s for s in self._sessions.values() if s.live is connection), None)

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
