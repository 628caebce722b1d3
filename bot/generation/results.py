"""What a generator answers, whichever backend generates (``bot.generation.backends``).

Kept apart from the engine, which imports torch: the bot calling Ray Serve replicas gets
these objects back from them without loading torch itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.errors import GenerationTimeoutError
from bot.model_store import PublishedModel


@dataclass
class GenerationResult:
    tweets: list[str]
    model: PublishedModel


@dataclass(frozen=True)
class EngineStats:
    device: str
    loaded_models: list[str]
    queue_depth: int
    requests_served: int
    batches_run: int
    loaded_bases: list[str] = field(default_factory=list)
    running_rows: int = 0
    quantized: bool = False


def timed_out(limit: float) -> GenerationTimeoutError:
    """The one answer to a request past its time, whichever backend timed it out."""
    return GenerationTimeoutError(
        f"generation took longer than {limit:g} s; try again or ask for fewer tweets"
    )
