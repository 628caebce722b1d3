"""The status lines shared by ``tweetlike status`` and ``/status``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from jobs_support import RecordingNotifier

from bot.cli import main
from bot.config import Settings
from bot.core.ports import DeploymentView, ProcessView
from bot.core.status import status_lines
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.jobs.membership import Transport


def process(
    owner: str, shards: tuple[int, ...] | None, count: int | None, **kw: object
) -> ProcessView:
    return ProcessView(
        owner=owner,
        leader=bool(kw.get("leader", False)),
        transport=str(kw.get("transport", "discord")),
        shard_ids=shards,
        shard_count=count,
        age=1.0,
    )


def deployment(*processes: ProcessView, this: str | None = None) -> DeploymentView:
    leaders = [p.owner for p in processes if p.leader]
    return DeploymentView(
        leader=leaders[0] if leaders else None,
        leader_age=2.0 if leaders else None,
        this_process=this,
        processes=processes,
    )


def test_the_lines_name_the_backend_the_runner_and_this_process_as_leader(
    settings: Settings,
) -> None:
    view = deployment(process("a:1:x", (0,), 2, leader=True), this="a:1:x")
    lines = status_lines(settings, view)
    assert lines[:3] == [
        "generation backend: local",
        "training runner: subprocess",
        "scheduler leader: this process (a:1:x)",
    ]
    assert "process a:1:x (this process): leader, Discord shards 0 of 2" in lines[3]


def test_a_shard_no_process_serves_is_named(settings: Settings) -> None:
    view = deployment(
        process("a:1:x", (0,), 3, leader=True), process("b:2:y", (2,), 3), this="b:2:y"
    )
    lines = status_lines(settings, view)
    assert "scheduler leader: a:1:x (not this process), heartbeat 2 s ago" in lines
    assert lines[-1] == "shards not served by any process: 1 (of 3)"


def test_processes_that_disagree_on_the_shard_count_are_told_to_agree(
    settings: Settings,
) -> None:
    view = deployment(process("a:1:x", (0,), 2, leader=True), process("b:2:y", (1,), 4))
    assert "disagree on discord.shard_count (2, 4)" in status_lines(settings, view)[-1]


def test_no_leader_says_nothing_is_trained_or_scheduled(settings: Settings) -> None:
    lines = status_lines(settings, deployment(process("b:2:y", (1,), 2)))
    assert "scheduler leader: none running" in lines[2]
    assert "scheduler.enabled = true" in lines[2]


async def test_the_status_command_shows_the_running_leader(
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(discord={"shard_ids": [0], "shard_count": 1})
    monkeypatch.setenv("TWEETLIKE_STORAGE__DATABASE_URL", settings.storage.database_url)
    with GenerationEngine(settings) as engine:
        leader = JobManager(
            settings, engine, RecordingNotifier(), transport=Transport("discord", (0,), 1)
        )
        await leader.start()
        try:
            assert await asyncio.to_thread(main, ["status"]) == 0
        finally:
            await leader.stop()
    out = capsys.readouterr().out
    assert f"scheduler leader: {leader.membership.owner}, heartbeat" in out
    assert f"process {leader.membership.owner}: leader, Discord shards 0 of 1" in out
    assert "shards: all 1 served" in out
