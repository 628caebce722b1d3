"""This process's place among the processes that share one database.

Every serving process (the scheduler leader and each gateway process) keeps a row in
``tweetlike_processes`` with its role and shards, renewed with a heartbeat, so
``tweetlike status`` and ``/status`` show the whole deployment: who leads, which process
serves which shards, and which shards nobody serves. The leader also holds and renews the
scheduler lease (:mod:`bot.jobs.leader_lease`) in the same beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from bot.core.ports import DeploymentView, ProcessView
from bot.jobs.leader_lease import LeaderLease, new_owner
from bot.jobs.state import database_now, processes_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transport:
    """What a process serves to users."""

    kind: str = "none"  # "discord", "console" or "none"
    shard_ids: tuple[int, ...] | None = None
    shard_count: int | None = None


NO_TRANSPORT = Transport()


def read_deployment(
    engine: Engine, lease_seconds: float, this_process: str | None = None
) -> DeploymentView:
    """The lease holder and the processes seen within a lease, from the database."""
    holder = LeaderLease(engine, this_process or "", lease_seconds).holder()
    with engine.connect() as conn:
        now = database_now(conn)
        rows = conn.execute(select(processes_table).order_by(processes_table.c.started_at))
        processes = tuple(
            ProcessView(
                owner=row.owner,
                leader=holder is not None and row.owner == holder.owner,
                transport=row.transport,
                shard_ids=None if row.shard_ids is None else tuple(row.shard_ids),
                shard_count=row.shard_count,
                age=max(0.0, now - row.heartbeat),
            )
            for row in rows
            if now - row.heartbeat <= lease_seconds
        )
    return DeploymentView(
        leader=holder.owner if holder else None,
        leader_age=holder.age if holder else None,
        this_process=this_process,
        processes=processes,
    )


class Membership:
    """Registers this process, beats for it and, for the leader, holds the scheduler lease."""

    def __init__(
        self,
        engine: Engine,
        *,
        leader: bool,
        transport: Transport,
        lease_seconds: float,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.owner = owner or new_owner()
        self.leader = leader
        self.transport = transport
        self.lease = LeaderLease(engine, self.owner, lease_seconds)
        self._beat: asyncio.Task[None] | None = None

    async def join(self, on_lost: Callable[[str], None]) -> None:
        """Take the lease (leader; may raise LeaderRefusedError), register, start beating."""
        if self.leader:
            await self.lease.acquire()
        await asyncio.to_thread(self._register)
        self._beat = asyncio.create_task(self._beat_forever(on_lost), name="membership")

    async def leave(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        try:
            await asyncio.to_thread(self._unregister)
        except Exception as exc:  # the rows expire by themselves; say so and go on stopping
            log.warning("could not remove this process from the database: %s", exc)

    def deployment(self) -> DeploymentView:
        return read_deployment(self.engine, self.lease.lease_seconds, self.owner)

    async def _beat_forever(self, on_lost: Callable[[str], None]) -> None:
        keeper = (
            asyncio.create_task(self.lease.keep(on_lost), name="scheduler-lease")
            if self.leader
            else None
        )
        try:
            while True:
                await asyncio.sleep(self.lease.renew_interval)
                try:
                    await asyncio.to_thread(self._heartbeat)
                except Exception as exc:
                    log.warning("could not record this process's heartbeat: %s", exc)
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper

    def _register(self) -> None:
        with self.engine.begin() as conn:
            now = database_now(conn)
            conn.execute(delete(processes_table).where(processes_table.c.owner == self.owner))
            conn.execute(
                insert(processes_table).values(
                    owner=self.owner,
                    leader=self.leader,
                    transport=self.transport.kind,
                    shard_ids=None
                    if self.transport.shard_ids is None
                    else list(self.transport.shard_ids),
                    shard_count=self.transport.shard_count,
                    started_at=now,
                    heartbeat=now,
                )
            )

    def _heartbeat(self) -> None:
        with self.engine.begin() as conn:
            now = database_now(conn)
            updated = conn.execute(
                update(processes_table)
                .where(processes_table.c.owner == self.owner)
                .values(heartbeat=now)
            )
        if updated.rowcount == 0:  # purged while this process could not reach the database
            self._register()

    def _unregister(self) -> None:
        if self.leader:
            self.lease.release()
        with self.engine.begin() as conn:
            conn.execute(delete(processes_table).where(processes_table.c.owner == self.owner))
            # Rows of processes that died without leaving are no use to anyone.
            now = database_now(conn)
            conn.execute(
                delete(processes_table).where(
                    processes_table.c.heartbeat < now - 10 * self.lease.lease_seconds
                )
            )
