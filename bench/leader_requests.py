"""How quickly the scheduler leader answers a gateway process's request, and what polling costs.

A gateway process files a request in the database and waits; the leader looks for new
requests every ``scheduler.poll_seconds``. This measures, for several poll intervals, the
round trip of a request that does nothing else (removing an auto-post that does not exist),
so the figures are the transport alone, and the database time one poll costs the leader
(the claim query, when there is nothing to claim). SQLite always; PostgreSQL too when
``TEST_POSTGRES_URL`` names a server (``source .ci/postgres.sh && start_postgres``).

    .venv/bin/python bench/leader_requests.py            # 40 requests per row
    .venv/bin/python bench/leader_requests.py --quick    # 10 requests per row
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.jobs.gateway_jobs import GatewayJobs
from bot.jobs.manager import JobManager
from bot.jobs.requests import RequestTable

POLL_INTERVALS = (0.1, 0.25, 0.5, 1.0)


class QuietNotifier:
    async def post_tweets(self, *args: object, **kwargs: object) -> None:
        return None

    async def post_text(self, *args: object, **kwargs: object) -> None:
        return None

    async def post_progress(self, *args: object, **kwargs: object) -> int | None:
        return None


def settings_for(url: str, folder: Path, poll: float, *, leads: bool) -> Settings:
    return Settings(
        storage={
            "database_url": url,
            "models_dir": str(folder / "models"),
            "data_dir": str(folder / "data"),
        },
        generation={"device": "cpu"},
        scheduler={"enabled": leads, "poll_seconds": poll},
    )


async def round_trips(url: str, folder: Path, poll: float, count: int) -> list[float]:
    settings = settings_for(url, folder, poll, leads=True)
    with GenerationEngine(settings) as engine:
        leader = JobManager(settings, engine, QuietNotifier())
        await leader.start()
        gateway = GatewayJobs(settings_for(url, folder, poll, leads=False))
        await gateway.start()
        try:
            times = []
            for n in range(count):
                # Requests arrive at random moments relative to the leader's polls.
                await asyncio.sleep(poll * ((n * 7919) % 100) / 100)
                started = time.perf_counter()
                await gateway.remove_autopost("nosuchpost")
                times.append(time.perf_counter() - started)
            return times
        finally:
            await gateway.stop()
            await leader.stop()


def idle_poll_cost(url: str, count: int = 200) -> float:
    """Seconds of one claim query with nothing pending."""
    from bot.jobs.state import open_database

    engine = open_database(url)
    table = RequestTable(engine)
    table.claim_pending()
    started = time.perf_counter()
    for _ in range(count):
        table.claim_pending()
    cost = (time.perf_counter() - started) / count
    engine.dispose()
    return cost


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class PostgresDatabases:
    """A fresh database per row on the server named by TEST_POSTGRES_URL."""

    def __init__(self, server_url: str) -> None:
        self.server = make_url(server_url)
        self.admin = create_engine(self.server, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self) -> str:
        name = f"tweetlike_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return self.server.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 requests per row")
    args = parser.parse_args()
    count = 10 if args.quick else 40
    postgres_url = os.environ.get("TEST_POSTGRES_URL")
    postgres = PostgresDatabases(postgres_url) if postgres_url else None
    print(f"{count} requests per row; round trip = gateway files it, leader answers, gateway reads")
    print()
    print("| database | poll_seconds | p50 ms | p95 ms | max ms | claim query ms | polls/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        for kind in ("sqlite", "postgresql"):
            if kind == "postgresql" and postgres is None:
                print("| postgresql | - | skipped: TEST_POSTGRES_URL is not set | | | | |")
                continue
            for poll in POLL_INTERVALS:
                with tempfile.TemporaryDirectory() as folder:
                    url = (
                        f"sqlite:///{Path(folder) / 'bench.sqlite'}"
                        if postgres is None or kind == "sqlite"
                        else postgres.new()
                    )
                    times = await round_trips(url, Path(folder), poll, count)
                    cost = idle_poll_cost(url)
                print(
                    f"| {kind} | {poll:g} | {statistics.median(times) * 1000:.0f} | "
                    f"{percentile(times, 0.95) * 1000:.0f} | {max(times) * 1000:.0f} | "
                    f"{cost * 1000:.2f} | {1 / poll:g} |"
                )
    finally:
        if postgres is not None:
            postgres.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
