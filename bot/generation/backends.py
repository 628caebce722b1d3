"""Where generation runs (``generation.backend``), behind one interface.

``local`` is the engine inside this process (:class:`bot.generation.engine.GenerationEngine`);
``ray`` sends every request to Ray Serve replicas running that same engine
(:class:`bot.generation.ray_backend.RayGenerator`). Every path that generates (the service
core for Discord and the console, auto-posts and ready-pings, ``tweetlike generate``) takes
its generator from :func:`make_generator`, so the key is honoured everywhere.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from bot.config import Settings
from bot.generation.results import EngineStats, GenerationResult


class Generator(Protocol):
    """What callers may use of a generator, local or remote.

    ``start`` may block for seconds (a Ray backend joins its cluster and deploys): call it
    off the event loop. ``stats`` never blocks.
    """

    def start(self) -> None: ...

    def close(self) -> None: ...

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        count: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> GenerationResult: ...

    def generate_sync(
        self,
        model: str,
        prompt: str,
        *,
        count: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> GenerationResult: ...

    def stats(self) -> EngineStats: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def make_generator(settings: Settings) -> Generator:
    """The configured backend's generator, not started yet."""
    if settings.generation.backend == "ray":
        from bot.ray_cluster import prepare_serve

        prepare_serve(settings)
        from bot.generation.ray_backend import RayGenerator

        return RayGenerator(settings)
    from bot.generation.engine import GenerationEngine

    return GenerationEngine(settings)


def generate_once(
    settings: Settings,
    name: str,
    prompt: str,
    *,
    count: int = 1,
    seed: int | None = None,
    temperature: float | None = None,
) -> list[str]:
    """Start a generator, answer one request, shut it down: the CLI's ``generate``."""
    with make_generator(settings) as generator:
        return generator.generate_sync(
            name, prompt, count=count, seed=seed, temperature=temperature
        ).tweets
