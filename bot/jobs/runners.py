"""How a queued training runs (``training.runner``): one small interface, two runners.

The training queue decides what runs and when, and what a run's end means
(:func:`bot.jobs.runner.run_training`: events relayed, cancel, timeout, shutdown). A runner
only starts a run; the :class:`TrainingRun` it returns streams the ``--progress json`` events,
ends with an exit status (0 only once the model is published in this host's store) and can
be stopped. ``subprocess`` runs ``python -m bot train`` beside the bot
(:mod:`bot.jobs.runner`); ``ray`` runs it on a Ray worker (:mod:`bot.jobs.ray_runner`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from bot.config import Settings
from bot.jobs.runner import TrainingProcess, child_environment, training_command
from bot.jobs.state import JobRecord
from bot.training.progress import TrainingEvent


class TrainingRun(Protocol):
    @property
    def pid(self) -> int | None:
        """A process on this host to kill if the bot dies and restarts; None for a run
        elsewhere (a Ray task dies with the bot that owns it)."""
        ...

    def events(self) -> AsyncIterator[TrainingEvent]: ...

    async def wait(self) -> int: ...

    async def terminate(self, grace_seconds: float) -> None: ...

    def failure_reason(self, code: int) -> str: ...


class TrainingRunner(Protocol):
    async def start(self, record: JobRecord) -> TrainingRun:
        """Start the job's training; OSError or TweetlikeError when it cannot start."""
        ...


@dataclass(frozen=True)
class SubprocessRunner:
    settings: Settings

    async def start(self, record: JobRecord) -> TrainingRun:
        return await TrainingProcess.start(
            training_command(record.handles, fetch=record.fetch),
            child_environment(self.settings),
            nice=self.settings.training.nice,
        )


def make_runner(settings: Settings) -> TrainingRunner:
    if settings.training.runner == "ray":
        from bot.jobs.ray_runner import RayRunner

        return RayRunner(settings)
    return SubprocessRunner(settings)
