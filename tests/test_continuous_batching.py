"""Continuous batching in the engine: a request joins the batch already running for its base
at the next step, a short tweet leaves as soon as it ends, and a cancelled request's rows
leave at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from model_factory import publish_lora_model

from bot.config import Settings
from bot.generation.engine import GenerationEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The tiny base's context is 256 tokens: a long tweet of 240 takes 240 decoding steps.
LONG = 240
PATIENCE = 60.0  # seconds: a limit for a busy machine, never reached on a working one


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    publish_lora_model(root, "long", seed=1, max_new_tokens=LONG, min_new_tokens=LONG)
    publish_lora_model(root, "short", seed=2, max_new_tokens=4, min_new_tokens=4)
    return root


@pytest.fixture
def engine(make_settings: Callable[..., Settings], store: Path) -> GenerationEngine:
    settings = make_settings(
        storage={"models_dir": str(store)},
        generation={"novelty_guard": False, "max_new_tokens": LONG, "batch_window_ms": 0},
    )
    with GenerationEngine(settings) as engine:
        yield engine


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "the engine did not get there"
        await asyncio.sleep(0.001)


async def test_a_request_joins_the_running_batch_and_leaves_when_its_tweet_ends(
    engine: GenerationEngine,
) -> None:
    long = asyncio.ensure_future(engine.generate("long", ""))
    await _until(lambda: engine.stats().running_rows == 1)
    short = await engine.generate("short", "Coffee")
    # Static batching would have run "short" after the 240 steps of "long", in a new batch.
    assert not long.done()
    assert engine.stats().batches_run == 1
    assert short.tweets[0].startswith("Coffee")
    assert len((await long).tweets) == 1
    assert engine.stats().batches_run == 1


async def test_a_cancelled_request_leaves_its_batch_at_once(engine: GenerationEngine) -> None:
    doomed = asyncio.ensure_future(engine.generate("long", "", count=3))
    await _until(lambda: engine.stats().running_rows == 3)
    doomed.cancel()
    await _until(lambda: engine.stats().running_rows == 0)
    assert engine.stats().requests_served == 0  # it never ran to the end
    assert len((await engine.generate("short", "")).tweets) == 1
