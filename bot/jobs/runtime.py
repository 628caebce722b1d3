"""Where scheduled job functions find the running :class:`bot.jobs.manager.JobManager`.

APScheduler's persistent job store pickles a job's function reference and arguments, so a
job can name ``bot.jobs.autopost:run_autopost`` and an auto-post id, but never the manager
itself (it holds sockets, an engine, a subprocess). The manager registers itself here when it
starts and removes itself when it stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.jobs.manager import JobManager

_current: JobManager | None = None


class NoRunningManagerError(RuntimeError):
    """A scheduled job fired with no manager started (a bug in start/stop ordering)."""


def register(manager: JobManager) -> None:
    global _current
    _current = manager


def unregister(manager: JobManager) -> None:
    global _current
    if _current is manager:
        _current = None


def current() -> JobManager:
    if _current is None:
        raise NoRunningManagerError("the job manager is not running")
    return _current
