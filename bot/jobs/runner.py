"""One training run: ``python -m bot train NAME... --progress json`` in a subprocess.

Training never runs inside the bot: a crash, a CUDA out-of-memory or a hung tokenizer must
not take the Discord connection down, and the only safe way to stop a training is to end
its process. Publishing is an atomic symlink swap, so ending it at any moment (SIGTERM, then
SIGKILL after a grace period) leaves the previous model serving.

The child runs in its own process group (``start_new_session``) so the whole group can be
signalled, and on Linux asks the kernel to SIGKILL it when the bot dies
(``PR_SET_PDEATHSIG``), so a killed bot leaves no training writing to the model store.

The child yields the CPU to serving (:mod:`bot.cpu_share`): a lower priority, set
between fork and exec, and a thread budget in its environment.

The child must see exactly the parent's settings, which may come from a file, the
environment or (in tests) code. They are handed over as one ``TWEETLIKE_<SECTION>`` JSON
variable per section: never on the command line, where ``ps`` would show the secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from bot.config import ENV_PREFIX, Settings
from bot.cpu_share import lower_priority, set_autogroup_nice, thread_environment
from bot.training.progress import DoneEvent, ErrorEvent, TrainingEvent, parse_event

if TYPE_CHECKING:
    from bot.jobs.runners import TrainingRun

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STDOUT_LINE_LIMIT = 1 << 20
STDERR_LINES_KEPT = 20
# The kernel takes one autogroup change per 100 ms host-wide from a process without
# CAP_SYS_ADMIN; a second training, or another program, may have just made one.
AUTOGROUP_ATTEMPTS = 5
AUTOGROUP_RETRY_SECONDS = 0.1

StopReason = Literal["cancelled", "timeout", "shutdown"]


@dataclass(frozen=True)
class TrainingOutcome:
    succeeded: bool
    version: str | None = None
    error: str | None = None
    stopped: StopReason | None = None


def training_command(handles: list[str], *, fetch: bool) -> list[str]:
    command = [sys.executable, "-m", "bot", "train", *handles, "--progress", "json"]
    if fetch:
        command.append("--fetch")
    return command


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def child_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment, its TWEETLIKE_* overrides replaced by the effective settings."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith(ENV_PREFIX)
    }
    for section, values in settings.model_dump().items():
        env[f"{ENV_PREFIX}{section.upper()}"] = json.dumps(_plain(values))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(thread_environment(settings))
    return env


def _child_preexec(nice: int) -> Callable[[], None] | None:
    """A preexec hook lowering the child's priority and, on Linux, making it die with the bot."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    if libc is None and nice <= 0:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the bot died between fork and prctl
                os._exit(1)
        lower_priority(nice)

    return preexec


def looks_like_training(pid: int) -> bool:
    """Whether ``pid`` is alive and is one of our training subprocesses (not a reused pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return "bot" in argv and "train" in argv and "--progress" in argv


def kill_leftover(pid: int) -> bool:
    """SIGKILL a training left running by a previous bot process; True if one was found."""
    if not looks_like_training(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    log.warning("killed leftover training subprocess %d from a previous run", pid)
    return True


class TrainingProcess:
    """A started training subprocess: its events, its end, and how to stop it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls, command: list[str], env: dict[str, str], *, nice: int = 0
    ) -> TrainingProcess:
        """Start ``command``; ``nice`` is added to its niceness and its session's."""
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=_child_preexec(nice),
            limit=STDOUT_LINE_LIMIT,
        )
        for _ in range(AUTOGROUP_ATTEMPTS):
            if set_autogroup_nice(process.pid, nice):
                break
            await asyncio.sleep(AUTOGROUP_RETRY_SECONDS)
        else:
            log.warning(
                "the kernel kept refusing to lower the CPU share of training %d's session; "
                "it competes with serving as an equal",
                process.pid,
            )
        log.info("training subprocess %d started: %s", process.pid, " ".join(command[1:]))
        return cls(process)

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.debug("training %d: %s", self.pid, line)

    async def events(self) -> AsyncIterator[TrainingEvent]:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            event = parse_event(raw.decode(errors="replace"))
            if event is not None:
                yield event

    async def wait(self) -> int:
        code = await self.process.wait()
        with contextlib.suppress(Exception):
            await self._stderr_task
        return code

    async def terminate(self, grace_seconds: float) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after the grace."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace_seconds)
        except TimeoutError:
            log.warning(
                "training %d ignored SIGTERM for %.0fs; killing it", self.pid, grace_seconds
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            await self.process.wait()

    def failure_reason(self, code: int) -> str:
        last = self.stderr_tail[-1] if self.stderr_tail else None
        return last or f"the training process exited with status {code}"


async def run_training(
    process: TrainingRun,
    on_event: Callable[[TrainingEvent], Awaitable[None]],
    *,
    timeout_seconds: float,
    stop_requested: asyncio.Event,
    stop_reason: Callable[[], StopReason],
    grace_seconds: float,
) -> TrainingOutcome:
    """Relay events until the process ends, times out or is asked to stop."""
    result: dict[str, TrainingEvent] = {}

    async def consume() -> None:
        async for event in process.events():
            if isinstance(event, DoneEvent | ErrorEvent):
                result["final"] = event
            try:
                await on_event(event)
            except Exception:
                log.exception("relaying a training event failed")
        await process.wait()

    consumer = asyncio.create_task(consume())
    stopper = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait(
        {consumer, stopper}, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED
    )
    stopped: StopReason | None = None
    if consumer not in done:
        stopped = stop_reason() if stopper in done else "timeout"
        await process.terminate(grace_seconds)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer, grace_seconds)
        consumer.cancel()
    stopper.cancel()
    code = await process.wait()

    if stopped is not None:
        return TrainingOutcome(succeeded=False, stopped=stopped)
    final = result.get("final")
    if isinstance(final, DoneEvent) and code == 0:
        return TrainingOutcome(succeeded=True, version=final.version)
    if isinstance(final, ErrorEvent):
        return TrainingOutcome(succeeded=False, error=final.message)
    return TrainingOutcome(succeeded=False, error=process.failure_reason(code))
