"""Progress events of a training run: the ``--progress json`` line protocol.

The training subprocess prints one event per line on stdout; the bot's job runner parses
them back with :func:`parse_event`. Keeping both sides on these models is what makes the
stream a contract rather than a convention.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, TextIO

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from bot.redaction import redact

Stage = Literal["fetch", "prepare", "train", "publish"]


class ProgressEvent(BaseModel):
    event: Literal["progress"] = "progress"
    stage: Stage
    fraction: float = Field(ge=0.0, le=1.0)
    detail: str | None = None


class WarningEvent(BaseModel):
    event: Literal["warning"] = "warning"
    message: str


class DoneEvent(BaseModel):
    event: Literal["done"] = "done"
    model: str
    version: str


class ErrorEvent(BaseModel):
    event: Literal["error"] = "error"
    message: str


TrainingEvent = Annotated[
    ProgressEvent | WarningEvent | DoneEvent | ErrorEvent, Field(discriminator="event")
]
_adapter: TypeAdapter[TrainingEvent] = TypeAdapter(TrainingEvent)


def parse_event(line: str) -> TrainingEvent | None:
    """Parse one stdout line; None for lines that are not events (stray library output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return _adapter.validate_json(line)
    except ValidationError:
        return None


def dump_event(event: TrainingEvent) -> str:
    """One JSON line, with any configured secret redacted (the parent may show it anywhere)."""
    return redact(event.model_dump_json(exclude_none=True))


class JsonReporter:
    """Writes the event stream for a parent process; throttled so a long run stays short.

    A ``progress`` event goes out when the stage changes, when the stage completes, or when
    the fraction moved by at least ``min_step`` since the last one of that stage.
    """

    def __init__(self, stream: TextIO, min_step: float = 0.01) -> None:
        self._stream = stream
        self._min_step = min_step
        self._last: tuple[Stage, float] | None = None

    def progress(self, stage: Stage, fraction: float, detail: str | None = None) -> None:
        fraction = min(1.0, max(0.0, fraction))
        if self._last is not None:
            last_stage, last_fraction = self._last
            if last_stage == stage and fraction < 1.0 and fraction - last_fraction < self._min_step:
                return
        self._last = (stage, fraction)
        self._emit(ProgressEvent(stage=stage, fraction=fraction, detail=detail))

    def warning(self, message: str) -> None:
        self._emit(WarningEvent(message=message))

    def done(self, model: str, version: str) -> None:
        self._emit(DoneEvent(model=model, version=version))

    def error(self, message: str) -> None:
        self._emit(ErrorEvent(message=message))

    def _emit(self, event: TrainingEvent) -> None:
        self._stream.write(dump_event(event) + "\n")
        self._stream.flush()


class BarReporter:
    """A progress bar for people: redrawn in place on a terminal, one line per tenth when
    stderr is a file or pipe (so logs stay readable)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last: tuple[Stage, int] | None = None

    def progress(self, stage: Stage, fraction: float, detail: str | None = None) -> None:
        fraction = min(1.0, max(0.0, fraction))
        percent = int(fraction * 100)
        shown = (stage, percent if self._tty else percent // 10)
        if shown == self._last:
            return
        new_stage = self._last is not None and self._last[0] != stage
        self._last = shown
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{stage:<8} [{bar}] {percent:3d}%" + (f"  {detail}" if detail else "")
        if self._tty:
            self._stream.write(("\n" if new_stage else "\r") + line.ljust(79))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def warning(self, message: str) -> None:
        self._end_line()
        self._stream.write(f"warning: {redact(message)}\n")
        self._stream.flush()

    def done(self, model: str, version: str) -> None:
        self._end_line()

    def error(self, message: str) -> None:
        self._end_line()

    def _end_line(self) -> None:
        """Leave the in-place bar's line so the next output starts on a fresh one."""
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._last = None


class Reporter(Protocol):
    """What the training pipeline reports to: :class:`JsonReporter` or :class:`BarReporter`."""

    def progress(self, stage: Stage, fraction: float, detail: str | None = None) -> None: ...

    def warning(self, message: str) -> None: ...

    def done(self, model: str, version: str) -> None: ...

    def error(self, message: str) -> None: ...
