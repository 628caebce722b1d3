"""How one host's cores are shared between serving and the bot's trainings.

One host usually both serves and trains, and a training uses every core it is given: on two
cores, one request took 3.8 times as long while a GPT-2-small-shaped training ran beside it
(README, Performance; ``bench/serving_while_training.py``). So the training subprocess the
bot starts

- runs at a lower priority: ``training.nice`` is added to its niceness between fork and
  exec, so every thread it starts inherits it. Linux with ``CONFIG_SCHED_AUTOGROUP`` (on by
  default in most distributions, and in force when the bot is not in a CPU cgroup of its
  own, as under a systemd service) shares the CPU between sessions first and by niceness
  only within one; the child starts a session of its own (so that its process group can be
  signalled), where a niceness alone would change nothing, so its session's autogroup gets
  ``training.nice`` added to the bot's own autogroup's niceness;
- gets a thread budget, ``training.threads`` torch threads (``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS`` in its environment, which torch reads at start-up): by default the
  cores the generation engine's threads leave free, at least one. A training thread that
  shares a core with the engine stalls the training's other threads at every operation, and
  the engine's own threads at every one of theirs.

The serving process itself runs torch with ``generation.threads`` threads when set (torch's
default, one per core, otherwise).

``tweetlike train`` run by hand is left alone: it is what its user started, at their
priority, with every core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from bot.config import Settings

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
MAX_NICE = 19


def available_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset cut)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def serving_threads(settings: Settings, cores: int) -> int:
    """The generation engine's torch threads: ``generation.threads``, else every core."""
    return settings.generation.threads or cores


def training_threads(settings: Settings, cores: int | None = None) -> int:
    """The training subprocess's torch threads: ``training.threads``, else the cores the
    engine leaves free (at least one)."""
    if settings.training.threads is not None:
        return settings.training.threads
    cores = cores or available_cores()
    return max(1, cores - serving_threads(settings, cores))


def use_serving_threads(settings: Settings) -> None:
    """Give this process's torch ``generation.threads`` threads, if set. Call it before the
    engine starts: a thread takes the count current when it first runs a torch operation."""
    if settings.generation.threads is not None:
        import torch

        torch.set_num_threads(settings.generation.threads)


def thread_environment(settings: Settings) -> dict[str, str]:
    threads = str(training_threads(settings))
    return dict.fromkeys(THREAD_VARIABLES, threads)


def lower_priority(nice: int) -> None:
    """Add ``nice`` to this process's niceness: called in the child between fork and exec."""
    if nice > 0:
        os.nice(nice)


def set_autogroup_nice(pid: int, nice: int) -> bool:
    """Make the session of ``pid`` (a session leader, whose new autogroup starts at 0) ``nice``
    steps nicer than this process's, where Linux groups the CPU by session; a kernel without
    autogroups has no such file. False means "try again shortly": without CAP_SYS_ADMIN the
    kernel takes one autogroup change per 100 ms on the whole host."""
    own, theirs = autogroup_nice(os.getpid()), autogroup_nice(pid)
    if own is None or theirs is None or theirs == min(MAX_NICE, own + nice):
        return True
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(min(MAX_NICE, own + nice)))
    except BlockingIOError:
        return False
    except OSError as exc:
        log.warning(
            "could not lower the CPU share of training %d's session (%s); "
            "it competes with serving as an equal",
            pid,
            exc.strerror or exc,
        )
    return True


def niceness(pid: int) -> int:
    """The niceness of ``pid`` as ``/proc/<pid>/stat`` shows it (field 19)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[16])


def autogroup_nice(pid: int) -> int | None:
    """The niceness of the autogroup of ``pid``; None without autogroups."""
    with contextlib.suppress(OSError):
        return parse_autogroup(Path(f"/proc/{pid}/autogroup").read_text())
    return None


def parse_autogroup(shown: str) -> int:
    """The niceness in ``/proc/<pid>/autogroup``'s ``/autogroup-42 nice 5``. The file is empty
    for a process still in the boot session's default autogroup (a container's processes
    whose init never started a session): that group is the root of the scheduler, cannot be
    niced, and its processes compete there by their own niceness, so it counts as 0 and a
    child's new session still gets ``training.nice``."""
    found = re.search(r"\bnice (-?\d+)", shown)
    return int(found.group(1)) if found else 0
