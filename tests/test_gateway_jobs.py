"""A gateway process (scheduler.enabled = false) hands writes to the leader through the
database, and reads what the leader wrote. On SQLite and, when set, PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from jobs_support import RecordingNotifier, job_state, process_alive, store_tweets, wait_until
from sqlalchemy import func, select

from bot.config import Settings
from bot.core.replies import Requester
from bot.errors import TweetlikeError
from bot.generation.engine import GenerationEngine
from bot.jobs.gateway_jobs import GatewayJobs
from bot.jobs.leader_lease import LeaderLease
from bot.jobs.manager import JobManager
from bot.jobs.requests import Request, RequestClient, RequestServer, RequestTable
from bot.jobs.scheduler import autopost_job_id
from bot.jobs.state import open_database, requests_table

OPERATOR = Requester(user_id=7, name="op", channel_id=70)


@dataclass
class Pair:
    settings: Settings
    leader: JobManager
    gateway: GatewayJobs


def shared_settings(
    make_settings: Callable[..., Settings], database_url: str, *, leads: bool
) -> Settings:
    return make_settings(
        storage={"database_url": database_url},
        scheduler={"enabled": leads, "lease_seconds": 3, "poll_seconds": 0.1},
    )


@pytest.fixture
async def pair(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Pair]:
    settings = shared_settings(make_settings, database_url, leads=True)
    with GenerationEngine(settings) as engine:
        leader = JobManager(settings, engine, RecordingNotifier(), progress_interval=0.0)
        await leader.start()
        gateway = GatewayJobs(shared_settings(make_settings, database_url, leads=False))
        await gateway.start()
        try:
            yield Pair(settings, leader, gateway)
        finally:
            await gateway.stop()
            await leader.stop()


async def test_an_autopost_added_by_a_gateway_is_scheduled_by_the_leader(pair: Pair) -> None:
    view = await pair.gateway.add_autopost(
        "sample", 5, every="6h", cron=None, prompts=["Hi"], post_to_x=False
    )

    assert pair.leader.scheduler.get_job(autopost_job_id(view.autopost_id)) is not None
    [listed] = await asyncio.to_thread(pair.gateway.autoposts)
    assert listed == view and listed.next_run is not None
    assert pair.leader.autoposts() == [listed]

    assert await pair.gateway.remove_autopost(view.autopost_id) is True
    assert pair.leader.scheduler.get_job(autopost_job_id(view.autopost_id)) is None
    assert await pair.gateway.remove_autopost(view.autopost_id) is False


async def test_a_training_requested_by_a_gateway_is_queued_and_cancelled_there(
    pair: Pair,
) -> None:
    for handle in ("alpha", "beta"):
        store_tweets(pair.settings, handle, 30)
    first = await pair.gateway.request_training(["alpha"], reason="train", requester=OPERATOR)
    second = await pair.gateway.request_training(["beta"], reason="train", requester=OPERATOR)
    again = await pair.gateway.request_training(["beta"], reason="train", requester=OPERATOR)

    assert (first.model, first.position, first.already_queued) == ("alpha", 0, False)
    assert (second.model, second.position, second.already_queued) == ("beta", 1, False)
    assert (again.job_id, again.already_queued) == (second.job_id, True)
    states = {v.job_id: v.state for v in await asyncio.to_thread(pair.gateway.jobs)}
    assert states == {first.job_id: "running", second.job_id: "queued"}

    assert await pair.gateway.cancel(second.job_id) is True
    record = pair.leader.state.job(second.job_id)
    assert record is not None and record.state == "cancelled"
    assert await pair.gateway.cancel("nosuchjob") is False


async def test_a_running_training_is_stopped_by_a_cancel_from_a_gateway(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = shared_settings(make_settings, database_url, leads=True)
    settings.training.epochs = 100  # still running when the cancel arrives, on any machine
    store_tweets(settings, "alpha", 200)
    notifier = RecordingNotifier()
    with GenerationEngine(settings) as engine:
        leader = JobManager(settings, engine, notifier, progress_interval=0.0)
        await leader.start()
        gateway = GatewayJobs(shared_settings(make_settings, database_url, leads=False))
        await gateway.start()
        try:
            ticket = await gateway.request_training(["alpha"], reason="train", requester=OPERATOR)
            await wait_until(lambda: any("fine-tuning" in c.text for c in notifier.progress))
            record = leader.state.job(ticket.job_id)
            assert record is not None and record.pid is not None

            assert await gateway.cancel(ticket.job_id) is True

            assert job_state(leader, ticket.job_id) == "cancelled"
            assert not process_alive(record.pid)
            assert not (settings.storage.models_dir / "alpha").exists()
        finally:
            await gateway.stop()
            await leader.stop()


async def test_a_refusal_by_the_leader_reaches_the_gateway_as_the_same_line(pair: Pair) -> None:
    with pytest.raises(TweetlikeError) as by_leader:
        await pair.leader.request_training(["nobody"], reason="train", requester=OPERATOR)
    with pytest.raises(TweetlikeError) as by_gateway:
        await pair.gateway.request_training(["nobody"], reason="train", requester=OPERATOR)
    assert str(by_gateway.value) == str(by_leader.value)


async def test_the_gateway_sees_the_leader_in_the_deployment(pair: Pair) -> None:
    view = await asyncio.to_thread(pair.gateway.deployment)
    assert view.leader == pair.leader.membership.owner
    assert view.this_process == pair.gateway.membership.owner
    leaders = [p.owner for p in view.processes if p.leader]
    assert leaders == [pair.leader.membership.owner] and len(view.processes) == 2


async def test_without_a_leader_a_gateway_refuses_at_once_and_files_nothing(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    gateway = GatewayJobs(shared_settings(make_settings, database_url, leads=False))
    await gateway.start()
    try:
        with pytest.raises(TweetlikeError, match="no scheduler leader is running"):
            await gateway.add_autopost(
                "sample", 5, every="6h", cron=None, prompts=[], post_to_x=False
            )
        with gateway.database.connect() as conn:
            assert conn.execute(select(func.count()).select_from(requests_table)).scalar() == 0
    finally:
        await gateway.stop()


async def test_a_request_no_leader_takes_is_withdrawn(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    gateway = GatewayJobs(shared_settings(make_settings, database_url, leads=False))
    await gateway.start()
    try:
        # A leader that holds the lease but never serves requests (hung).
        assert LeaderLease(gateway.database, "otherhost:4242:aaaaaa", 60).try_acquire() is None
        table = RequestTable(gateway.database)
        gateway.client = RequestClient(table, "me", pickup_seconds=0.3, answer_seconds=30)
        with pytest.raises(TweetlikeError, match="did not take this request"):
            await gateway.remove_autopost("whatever")
        with gateway.database.connect() as conn:
            states = conn.execute(select(requests_table.c.state)).scalars().all()
        assert states == ["abandoned"]
        assert table.claim_pending() == []
    finally:
        await gateway.stop()


async def test_a_locked_database_does_not_stall_the_event_loop(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with GenerationEngine(settings) as engine:
        leader = JobManager(settings, engine, RecordingNotifier())
        await leader.start()
        try:
            path = settings.storage.database_url.removeprefix("sqlite:///")
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            leader.scheduler.wakeup()  # the scheduler looks at its (locked) job store now
            adding = asyncio.create_task(
                leader.add_autopost("sample", 5, every="6h", cron=None, prompts=[], post_to_x=False)
            )
            # The write and the scheduler's look at its job store wait for the lock in
            # threads; the loop (and this test) runs on.
            gaps = await _loop_gaps(3.0)
            assert not adding.done()
            assert max(gaps) < 1.5
            blocker.execute("ROLLBACK")
            blocker.close()
            view = await asyncio.wait_for(adding, 30)
            job_id = autopost_job_id(view.autopost_id)
            await wait_until(lambda: leader.scheduler.get_job(job_id) is not None)
        finally:
            await leader.stop()


async def _loop_gaps(seconds: float) -> list[float]:
    """How long each wake-up of a 50 ms ticker took to come, over ``seconds``."""
    gaps = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        await asyncio.sleep(0.05)
        gaps.append(time.monotonic() - now)
    return gaps


class FlakyTable(RequestTable):
    """The real request table, whose first two statements fail as an unreachable database's."""

    failures = 2

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database went away")

    def forget_old(self) -> None:
        self._maybe_fail()
        super().forget_old()

    def claim_pending(self) -> list[Request]:
        self._maybe_fail()
        return super().claim_pending()


async def test_the_leader_serves_requests_again_after_database_errors(database_url: str) -> None:
    engine = open_database(database_url)

    async def handler(request: Request) -> str:
        return f"done {request.arguments['n']}"

    server = RequestServer(FlakyTable(engine), handler, poll_seconds=0.05)
    server.start()
    try:
        client = RequestClient(RequestTable(engine), "me", pickup_seconds=60, answer_seconds=60)
        assert await asyncio.wait_for(client.ask("cancel", {"n": 1}), 60) == "done 1"
    finally:
        await server.stop()
        engine.dispose()
