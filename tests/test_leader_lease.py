"""The scheduler leader's lease: one leader per database, a dead one replaced promptly.

Every case runs on SQLite and, when ``TEST_POSTGRES_URL`` is set (CI), on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from jobs_support import RecordingNotifier
from sqlalchemy import Engine, select, update

from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.jobs.leader_lease import LeaderLease, LeaderRefusedError, new_owner
from bot.jobs.manager import JobManager
from bot.jobs.state import database_now, leases_table, open_database

LEASE = 3.0  # seconds: renewed every second, so a live holder is seen moving quickly


@pytest.fixture
def database(database_url: str) -> Iterator[Engine]:
    engine = open_database(database_url)
    yield engine
    engine.dispose()


def age_lease(database: Engine, seconds: float) -> None:
    """Make the lease's last heartbeat ``seconds`` old, as if its holder had stopped."""
    with database.begin() as conn:
        now = database_now(conn)
        conn.execute(update(leases_table).values(heartbeat=now - seconds))


def exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_first_process_takes_the_free_lease(database: Engine) -> None:
    lease = LeaderLease(database, new_owner(), LEASE)
    assert lease.try_acquire() is None
    holder = lease.holder()
    assert holder is not None and holder.owner == lease.owner


def test_a_live_holder_keeps_the_lease(database: Engine) -> None:
    first = LeaderLease(database, "otherhost:4242:aaaaaa", LEASE)
    assert first.try_acquire() is None
    second = LeaderLease(database, new_owner(), LEASE)
    holder = second.try_acquire()
    assert holder is not None and holder.owner == first.owner


def test_an_expired_lease_of_another_host_is_taken_over(database: Engine) -> None:
    assert LeaderLease(database, "otherhost:4242:aaaaaa", LEASE).try_acquire() is None
    age_lease(database, LEASE + 1)
    successor = LeaderLease(database, new_owner(), LEASE)
    assert successor.try_acquire() is None
    holder = successor.holder()
    assert holder is not None and holder.owner == successor.owner


def test_a_dead_process_on_this_host_does_not_hold_the_lease(database: Engine) -> None:
    dead = f"{socket.gethostname()}:{exited_pid()}:aaaaaa"
    assert LeaderLease(database, dead, LEASE).try_acquire() is None
    assert LeaderLease(database, new_owner(), LEASE).try_acquire() is None


def test_a_released_lease_is_free_at_once(database: Engine) -> None:
    first = LeaderLease(database, "otherhost:4242:aaaaaa", LEASE)
    assert first.try_acquire() is None
    first.release()
    assert LeaderLease(database, new_owner(), LEASE).try_acquire() is None


def test_a_holder_that_lost_the_lease_cannot_renew_it(database: Engine) -> None:
    first = LeaderLease(database, new_owner(), LEASE)
    assert first.try_acquire() is None
    age_lease(database, LEASE + 1)
    assert LeaderLease(database, "otherhost:4242:bbbbbb", LEASE).try_acquire() is None
    assert first.renew() is False


async def test_a_leader_whose_lease_is_taken_is_told(database: Engine) -> None:
    lease = LeaderLease(database, new_owner(), LEASE)
    assert lease.try_acquire() is None
    lost: asyncio.Queue[str] = asyncio.Queue()
    keeper = asyncio.create_task(lease.keep(lost.put_nowait))
    try:
        age_lease(database, LEASE + 1)
        assert LeaderLease(database, "otherhost:4242:bbbbbb", LEASE).try_acquire() is None
        reason = await asyncio.wait_for(lost.get(), 30)
    finally:
        keeper.cancel()
    assert "another process took over" in reason


async def test_acquire_waits_out_a_holder_that_stopped_renewing(database: Engine) -> None:
    assert LeaderLease(database, "otherhost:4242:aaaaaa", LEASE).try_acquire() is None
    successor = LeaderLease(database, new_owner(), LEASE)
    await asyncio.wait_for(successor.acquire(), 30)
    holder = successor.holder()
    assert holder is not None and holder.owner == successor.owner


async def test_a_second_leader_on_one_database_is_refused_in_one_line(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(
        storage={"database_url": database_url}, scheduler={"lease_seconds": LEASE}
    )
    with GenerationEngine(settings) as engine:
        leader = JobManager(settings, engine, RecordingNotifier())
        await leader.start()
        try:
            second = JobManager(settings, engine, RecordingNotifier())
            with pytest.raises(LeaderRefusedError) as refused:
                await asyncio.wait_for(second.start(), 30)
        finally:
            await leader.stop()
        message = str(refused.value)
        assert "\n" not in message
        assert leader.membership.owner in message and "scheduler.enabled = false" in message
        # The leader left cleanly: the next one starts at once.
        successor = JobManager(settings, engine, RecordingNotifier())
        await asyncio.wait_for(successor.start(), 30)
        assert successor.deployment().leader == successor.membership.owner
        await successor.stop()


async def test_a_leader_that_loses_its_lease_pauses_its_scheduler_and_says_why(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    from apscheduler.schedulers.base import STATE_PAUSED

    settings = make_settings(
        storage={"database_url": database_url}, scheduler={"lease_seconds": LEASE}
    )
    lost: asyncio.Queue[str] = asyncio.Queue()
    with GenerationEngine(settings) as engine:
        leader = JobManager(
            settings, engine, RecordingNotifier(), on_leadership_lost=lost.put_nowait
        )
        await leader.start()
        try:
            age_lease(leader.database, LEASE + 1)
            usurper = LeaderLease(leader.database, "otherhost:4242:bbbbbb", LEASE)
            assert usurper.try_acquire() is None
            reason = await asyncio.wait_for(lost.get(), 30)
            assert leader.scheduler.state == STATE_PAUSED
        finally:
            await leader.stop()
    assert "another process took over the scheduler lease" in reason
    with leader.database.connect() as conn:  # stopping did not release someone else's lease
        assert conn.execute(select(leases_table.c.owner)).scalars().all() == [usurper.owner]
