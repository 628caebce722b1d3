"""Progress events of a training run: the ``--progress json`` line protocol.

The training subprocess prints one event per line on stdout; the bot's job runner parses
them back with :func:`parse_event`. Keeping both sides on these models is what makes the
stream a contract rather than a convention.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

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
    return event.model_dump_json(exclude_none=True)
