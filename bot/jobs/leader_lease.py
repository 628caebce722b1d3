"""The scheduler leader's lease: exactly one process per database runs the scheduler.

APScheduler 3.x cannot share a job store between schedulers (its FAQ asks "Can I share a
persistent job store between two or more processes?" and answers "No"): two schedulers on
one ``apscheduler_jobs`` table would both run every job, and each would drop the other's
wake-ups. So one process, the leader, holds a lease row in the database and renews it every
third of ``scheduler.lease_seconds``; every other process runs with ``scheduler.enabled =
false`` and hands its requests to the leader (:mod:`bot.jobs.requests`).

A row rather than PostgreSQL's ``pg_try_advisory_lock``: one mechanism for SQLite and
PostgreSQL; an advisory lock belongs to one database session, which connection pools and
transaction-pooling proxies (PgBouncer) do not keep; and the row says who leads, which
``tweetlike status`` shows. Expiry is judged on the database's clock
(:func:`bot.jobs.state.database_now`), so hosts whose clocks disagree agree on it.

A leader that dies stops renewing: the next one takes over once the lease has expired, and
at once when the dead owner was a process on its own host (a restart by a process manager).
A process that finds a lease renewed while it watches is refused with one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.errors import TweetlikeError
from bot.jobs.state import database_now, leases_table

log = logging.getLogger(__name__)

SCHEDULER_LEASE = "scheduler"
RENEWALS_PER_LEASE = 3

# Owners held by this process: another owner naming this host and pid is a previous
# incarnation (a container restarted keeps its host name and pid 1), so it is dead.
_held_here: set[str] = set()


class LeaderRefusedError(TweetlikeError):
    """This process was configured to lead, but another live process holds the lease."""


def new_owner() -> str:
    """Who a process is in the lease and process tables: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` was a process on this host that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return owner not in _held_here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    heartbeat: float  # the database's clock
    age: float  # seconds since that heartbeat, when read

    def describe(self) -> str:
        return f"{self.owner}, heartbeat {self.age:.0f} s ago"


class LeaderLease:
    def __init__(
        self, engine: Engine, owner: str, lease_seconds: float, name: str = SCHEDULER_LEASE
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.name = name

    @property
    def renew_interval(self) -> float:
        return self.lease_seconds / RENEWALS_PER_LEASE

    # -- synchronous statements (async callers run them in a thread) ---------------------

    def holder(self) -> LeaseHolder | None:
        """The live holder, or None when nobody holds the lease or it has expired."""
        with self.engine.connect() as conn:
            now = database_now(conn)
            row = conn.execute(select(leases_table).where(leases_table.c.name == self.name)).first()
        if row is None or now - row.heartbeat > self.lease_seconds:
            return None
        return LeaseHolder(row.owner, row.heartbeat, max(0.0, now - row.heartbeat))

    def try_acquire(self) -> LeaseHolder | None:
        """Take the lease if it is free, expired, ours or a dead local process's.

        Returns None when this process holds it now, else who does. A takeover is a
        compare-and-set on the row as read, so two contenders cannot both win.
        """
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    now = database_now(conn)
                    row = conn.execute(
                        select(leases_table).where(leases_table.c.name == self.name)
                    ).first()
                    if row is None:
                        conn.execute(
                            insert(leases_table).values(
                                name=self.name, owner=self.owner, heartbeat=now, acquired_at=now
                            )
                        )
                        _held_here.add(self.owner)
                        return None
                    free = (
                        row.owner == self.owner
                        or now - row.heartbeat > self.lease_seconds
                        or owner_is_gone(row.owner)
                    )
                    if not free:
                        return LeaseHolder(row.owner, row.heartbeat, max(0.0, now - row.heartbeat))
                    taken = conn.execute(
                        update(leases_table)
                        .where(
                            leases_table.c.name == self.name,
                            leases_table.c.owner == row.owner,
                            leases_table.c.heartbeat == row.heartbeat,
                        )
                        .values(owner=self.owner, heartbeat=now, acquired_at=now)
                    )
                    if taken.rowcount == 1:
                        if row.owner != self.owner:
                            log.info("took over the scheduler lease from %s", row.owner)
                        _held_here.add(self.owner)
                        return None
            except IntegrityError:
                pass  # another contender inserted the row first: read it again
        raise TweetlikeError("the scheduler lease kept changing under this process; try again")

    def renew(self) -> bool:
        """Push the heartbeat forward; False when the lease is no longer ours."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            result = conn.execute(
                update(leases_table)
                .where(leases_table.c.name == self.name, leases_table.c.owner == self.owner)
                .values(heartbeat=now)
            )
        return result.rowcount == 1

    def release(self) -> None:
        """Give the lease up at a clean stop, so the next leader need not wait it out."""
        _held_here.discard(self.owner)
        with self.engine.begin() as conn:
            conn.execute(
                delete(leases_table).where(
                    leases_table.c.name == self.name, leases_table.c.owner == self.owner
                )
            )

    # -- async ---------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take the lease, waiting out a holder that has stopped renewing it.

        A holder whose heartbeat moves while this process watches is alive: refused with
        one line. One that does not move has died; its lease expires within
        ``lease_seconds`` and this process takes over.
        """
        first: LeaseHolder | None = None
        check_every = self.renew_interval / 3
        while True:
            holder = await asyncio.to_thread(self.try_acquire)
            if holder is None:
                return
            if first is None:
                first = holder
                log.info(
                    "the scheduler lease is held by %s; waiting up to %.0f s to see if it is "
                    "still alive",
                    holder.describe(),
                    self.lease_seconds - holder.age,
                )
            elif holder.owner != first.owner or holder.heartbeat != first.heartbeat:
                raise LeaderRefusedError(
                    f"another process already runs the scheduler on this database "
                    f"({holder.describe()}): APScheduler cannot share its job store, so run "
                    "every other process with scheduler.enabled = false (README: Scaling out)"
                )
            await asyncio.sleep(check_every)

    async def keep(
        self, on_lost: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Renew until cancelled; call ``on_lost`` once if the lease is lost or cannot be
        renewed for a whole lease (another leader may have taken over by then)."""
        renewed_at = clock()
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                still_ours = await asyncio.to_thread(self.renew)
            except Exception as exc:
                log.warning("could not renew the scheduler lease: %s", exc)
                if clock() - renewed_at > self.lease_seconds:
                    on_lost(
                        f"the scheduler lease could not be renewed for {self.lease_seconds:g} s"
                    )
                    return
                continue
            if not still_ours:
                on_lost("another process took over the scheduler lease")
                return
            renewed_at = clock()
