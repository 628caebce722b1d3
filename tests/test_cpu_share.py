"""One host's cores shared between serving and training: the bot's training subprocess runs at
a lower priority (its own and its session's) with a thread budget, read back from the running
child, and the service runs torch with generation.threads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import torch
from fakes import WAIT_SECONDS

from bot.app import serve
from bot.config import Settings
from bot.cpu_share import (
    autogroup_nice,
    available_cores,
    niceness,
    parse_autogroup,
    set_autogroup_nice,
    training_threads,
)
from bot.jobs import runner
from bot.jobs.runner import TrainingProcess, child_environment

# The child says how it runs, then waits to be stopped, so the test reads /proc at leisure.
REPORT = textwrap.dedent(
    """
    import json, os, time
    import torch
    print(json.dumps({
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "torch_threads": torch.get_num_threads(),
    }), flush=True)
    time.sleep(600)
    """
)
HAS_AUTOGROUPS = autogroup_nice(os.getpid()) is not None


async def _start_reporting_child(settings: Settings) -> tuple[TrainingProcess, dict[str, int]]:
    child = await TrainingProcess.start(
        [sys.executable, "-c", REPORT],
        child_environment(settings),
        nice=settings.training.nice,
    )
    assert child.process.stdout is not None
    line = await asyncio.wait_for(child.process.stdout.readline(), WAIT_SECONDS)
    return child, json.loads(line)


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_training_child_runs_at_the_configured_lower_priority_and_its_session_too(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(training={"nice": 7})
    child, report = await _start_reporting_child(settings)
    try:
        expected = min(19, _own_nice() + 7)
        assert report["nice"] == expected
        assert niceness(child.pid) == expected
        own_group = autogroup_nice(os.getpid())
        assert autogroup_nice(child.pid) == (min(19, own_group + 7) if HAS_AUTOGROUPS else None)
    finally:
        await child.terminate(grace_seconds=WAIT_SECONDS)


def test_an_autogroup_file_reads_as_its_niceness() -> None:
    assert parse_autogroup("/autogroup-1126 nice -3\n") == -3


def test_the_default_autogroup_shown_as_an_empty_file_counts_as_niceness_zero() -> None:
    """A container's processes whose init never started a session are all in the boot
    session's group: the child's new session must still be niced against it."""
    assert parse_autogroup("") == 0


@pytest.mark.skipif(not HAS_AUTOGROUPS, reason="the kernel shares the CPU without autogroups")
async def test_a_refused_autogroup_change_is_tried_again_shortly(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CAP_SYS_ADMIN the kernel takes one autogroup change per 100 ms host-wide."""
    refusals = [False, False]

    def busy_kernel_then_real(pid: int, nice: int) -> bool:
        return refusals.pop() if refusals else set_autogroup_nice(pid, nice)

    monkeypatch.setattr(runner, "set_autogroup_nice", busy_kernel_then_real)
    settings = make_settings(training={"nice": 7})
    child, _ = await _start_reporting_child(settings)
    try:
        assert autogroup_nice(child.pid) == min(19, autogroup_nice(os.getpid()) + 7)
    finally:
        await child.terminate(grace_seconds=WAIT_SECONDS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_nice_zero_leaves_the_training_child_at_the_bots_priority(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(training={"nice": 0})
    child, report = await _start_reporting_child(settings)
    try:
        assert report["nice"] == niceness(child.pid) == _own_nice()
        assert autogroup_nice(child.pid) == autogroup_nice(os.getpid())
    finally:
        await child.terminate(grace_seconds=WAIT_SECONDS)


@pytest.mark.skipif(available_cores() < 2, reason="torch's default is already one thread")
@pytest.mark.skipif(not HAS_AUTOGROUPS, reason="the kernel shares the CPU without autogroups")
def test_a_training_childs_session_is_niced_relative_to_the_bots_own_session() -> None:
    bot = textwrap.dedent(
        """
        import asyncio, json, os, sys
        from pathlib import Path
        from bot.cpu_share import autogroup_nice
        from bot.jobs.runner import TrainingProcess

        os.setsid()  # a session of the bot's own, niced by an operator
        Path("/proc/self/autogroup").write_text("5")

        async def main():
            seen = {}
            for nice in (0, 7, 19):
                child = await TrainingProcess.start(
                    [sys.executable, "-c", "import time; time.sleep(600)"],
                    dict(os.environ),
                    nice=nice,
                )
                seen[nice] = autogroup_nice(child.pid)
                await child.terminate(grace_seconds=60)
            print(json.dumps(seen))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", bot], capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"0": 5, "7": 12, "19": 19}


async def test_a_training_child_runs_torch_with_the_configured_thread_budget(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(training={"threads": 1})
    child, report = await _start_reporting_child(settings)
    await child.terminate(grace_seconds=WAIT_SECONDS)
    assert report["torch_threads"] == 1


def test_by_default_a_training_gets_the_cores_the_engine_leaves_free(
    make_settings: Callable[..., Settings],
) -> None:
    assert training_threads(make_settings(generation={"threads": 1}), cores=4) == 3
    assert training_threads(make_settings(generation={"threads": 2}), cores=8) == 6


def test_a_training_gets_at_least_one_thread_when_the_engine_takes_every_core(
    make_settings: Callable[..., Settings],
) -> None:
    assert training_threads(make_settings(), cores=2) == 1
    assert training_threads(make_settings(generation={"threads": 16}), cores=4) == 1


def test_training_threads_set_in_the_config_win_over_the_engines_share(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(training={"threads": 5}, generation={"threads": 4})
    assert training_threads(settings, cores=4) == 5


async def test_the_service_runs_torch_with_generation_threads(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # the console ends at once
    try:
        settings = make_settings(generation={"threads": 1})
        assert await asyncio.wait_for(serve(settings, True, asyncio.Event()), WAIT_SECONDS) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
