"""The engine: batching keeps requests apart, back-pressure, timeouts, cancellation, seeds,
bounds, and an event loop that keeps running while batches generate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.errors import EngineBusyError, GenerationTimeoutError, ModelNotFoundError, TweetlikeError
from bot.generation.device import DeviceUnavailableError, dtype_for, resolve_device
from bot.generation.engine import GenerationEngine

FRUIT = [
    "fresh apples make the sweetest pie",
    "pears and plums ripen in the orchard",
    "cherries taste best with cold cream",
]
ANIMALS = [
    "zebras gallop across the dusty savanna",
    "lions doze under acacia trees",
    "hippos wallow in muddy rivers",
]
FRUIT_WORDS = {"apples", "sweetest", "pie", "pears", "plums", "orchard", "cherries", "cream"}
ANIMAL_WORDS = {"zebras", "gallop", "savanna", "lions", "doze", "acacia", "hippos", "rivers"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    publish_tiny_model(root, "fruit", FRUIT, train_steps=150, seed=1)
    publish_tiny_model(root, "animals", ANIMALS, train_steps=150, seed=2)
    # Untrained: its next token is spread over the whole vocabulary, so two different
    # random streams agree on 40 tokens with odds far below 1e-50, on any machine.
    publish_tiny_model(root, "noise", FRUIT, max_new_tokens=40, min_new_tokens=40)
    return root


@pytest.fixture
def engine_factory(
    make_settings: Callable[..., Settings], models_dir: Path
) -> Callable[..., GenerationEngine]:
    engines: list[GenerationEngine] = []

    def factory(**generation: object) -> GenerationEngine:
        settings = make_settings(
            storage={"models_dir": str(models_dir)},
            generation={"novelty_guard": False, **generation},
        )
        engine = GenerationEngine(settings)
        engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


async def test_concurrent_requests_get_their_own_count_prompt_and_model(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    engine = engine_factory(batch_window_ms=50, max_batch_size=16)
    asks = [
        ("fruit", "fresh", 1),
        ("animals", "zebras", 3),
        ("fruit", "pears and", 2),
        ("animals", "lions", 1),
        ("fruit", "cherries", 3),
        ("animals", "hippos wallow", 2),
    ] * 3
    results = await asyncio.gather(
        *(engine.generate(model, prompt, count=count) for model, prompt, count in asks)
    )
    vocab = {"fruit": (FRUIT_WORDS, ANIMAL_WORDS), "animals": (ANIMAL_WORDS, FRUIT_WORDS)}
    said: dict[str, set[str]] = {"fruit": set(), "animals": set()}
    for (model, prompt, count), result in zip(asks, results, strict=True):
        assert result.model.name == model
        assert len(result.tweets) == count
        assert all(t.startswith(prompt) for t in result.tweets)
        added = set().union(*(_words(t[len(prompt) :]) for t in result.tweets))
        assert not added & vocab[model][1], (model, result.tweets)
        said[model] |= added
    assert all(said[model] & own for model, (own, _) in vocab.items())
    stats = engine.stats()
    assert stats.requests_served == len(asks)
    assert stats.batches_run < len(asks)  # requests really were gathered into batches


async def test_models_take_turns_instead_of_first_come_first_served(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    engine = engine_factory(max_batch_size=1, batch_window_ms=0)
    finished: list[str] = []

    async def ask(model: str, prompt: str) -> None:
        await engine.generate(model, prompt)
        finished.append(model)

    # All seven are queued in the same turn of the loop, long before the worker can load the
    # model and serve two of them.
    crowd = [asyncio.ensure_future(ask("fruit", "fresh")) for _ in range(6)]
    late = asyncio.ensure_future(ask("animals", "zebras"))
    await asyncio.gather(*crowd, late)
    assert finished.index("animals") <= 2  # first come, first served would make it last


async def test_request_beyond_max_queue_fails_fast_with_busy(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    # The batch window (the longest allowed) holds the worker while the queue fills.
    engine = engine_factory(max_queue=2, batch_window_ms=1000, max_batch_size=16)
    waiting = [asyncio.ensure_future(engine.generate("fruit", "fresh")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(EngineBusyError, match="busy"):
        engine.generate("fruit", "fresh").send(None)  # refused before it ever waits
    assert all(len(r.tweets) == 1 for r in await asyncio.gather(*waiting))


async def test_request_that_times_out_is_withdrawn(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    # The worker waits out the window for a second row, so the lone request times out first.
    engine = engine_factory(batch_window_ms=1000, max_batch_size=2)
    with pytest.raises(GenerationTimeoutError, match="longer than"):
        await engine.generate("fruit", "fresh", timeout=0.05)
    assert engine.stats().queue_depth == 0
    filling = await engine.generate("fruit", "pears", count=2)  # a full batch goes at once
    assert len(filling.tweets) == 2
    assert engine.stats().requests_served == 1


async def test_cancelled_request_is_not_generated(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    # Four rows wait out the window for a fifth; five rows (the kept request) go at once.
    engine = engine_factory(batch_window_ms=1000, max_batch_size=5)
    doomed = asyncio.ensure_future(engine.generate("fruit", "fresh", count=4))
    await asyncio.sleep(0)
    doomed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await doomed  # the cancellation has reached the engine
    result = await engine.generate("fruit", "pears", count=5)
    assert len(result.tweets) == 5
    assert doomed.cancelled()
    assert engine.stats().requests_served == 1


async def test_same_seed_gives_same_tweets_whatever_else_is_queued(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    engine = engine_factory(batch_window_ms=20)
    alone = await engine.generate("noise", "fresh", count=3, seed=7, temperature=1.5)
    crowd = [engine.generate("noise", p, count=2, temperature=1.5) for p in ("pears", "fresh")]
    busy, *_ = await asyncio.gather(
        engine.generate("noise", "fresh", count=3, seed=7, temperature=1.5), *crowd
    )
    assert busy.tweets == alone.tweets


async def test_the_seed_chooses_the_tweets(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    # A model that memorised its tweets may say the same thing for every seed; the untrained
    # one cannot, so equal tweets from other seeds would mean the seed is ignored.
    engine = engine_factory()
    by_seed = [(await engine.generate("noise", "fresh", count=2, seed=s)).tweets for s in (7, 8)]
    assert by_seed[0] != by_seed[1]
    assert by_seed[0][0] != by_seed[0][1]  # one random stream per request, not one per tweet


def test_sync_api_serves_the_cli(engine_factory: Callable[..., GenerationEngine]) -> None:
    engine = engine_factory()
    result = engine.generate_sync("animals", "  zebras  ", count=2, seed=1)
    assert len(result.tweets) == 2
    assert all(t.startswith("zebras") for t in result.tweets)


def test_empty_prompt_generates_freely(engine_factory: Callable[..., GenerationEngine]) -> None:
    tweets = engine_factory().generate_sync("animals", "", count=3, seed=3).tweets
    assert len(tweets) == 3
    assert all(_words(t) & ANIMAL_WORDS for t in tweets)


def test_degenerate_outputs_are_resampled(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["?! ... !!", "?! ... !!", "good morning sunshine friends", "lovely evening by the sea"]
    publish_tiny_model(tmp_path / "models", "mixed", texts, train_steps=150)
    caplog.set_level(logging.DEBUG, logger="bot.generation.engine")
    # Nearly half the rows say the degenerate text (47% measured): among 20 rows (4 seeds), at
    # least one does with odds of 1 - 0.6**20 > 0.9999, whatever the seeds' streams.
    with GenerationEngine(make_settings(generation={"novelty_guard": False})) as engine:
        tweets = [
            t for s in range(4) for t in engine.generate_sync("mixed", "", count=5, seed=s).tweets
        ]
    assert "resampling a degenerate output" in caplog.text
    assert all(re.search(r"\w", t) for t in tweets)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be between 1 and 5"),
        ({"count": 6}, "count must be between 1 and 5"),
        ({"temperature": 0.05}, "temperature must be between 0.1 and 2.0"),
        ({"temperature": 2.5}, "temperature must be between 0.1 and 2.0"),
    ],
)
def test_out_of_bounds_options_are_refused(
    engine_factory: Callable[..., GenerationEngine], kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(TweetlikeError, match=message):
        engine_factory().generate_sync("fruit", "fresh", **kwargs)


def test_overlong_prompt_is_refused(engine_factory: Callable[..., GenerationEngine]) -> None:
    with pytest.raises(TweetlikeError, match="limit is 200"):
        engine_factory().generate_sync("fruit", "a" * 201)


def test_unknown_model_says_to_train_it(engine_factory: Callable[..., GenerationEngine]) -> None:
    with pytest.raises(ModelNotFoundError, match="tweetlike train nobody"):
        engine_factory().generate_sync("@Nobody", "hi")


async def test_event_loop_keeps_ticking_while_batches_generate(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    publish_tiny_model(tmp_path / "models", "long", FRUIT, max_new_tokens=120, min_new_tokens=120)
    settings = make_settings(generation={"max_new_tokens": 120, "max_batch_size": 8})
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            due = time.monotonic() + 0.005
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - due)

    with GenerationEngine(settings) as engine:
        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        await asyncio.gather(*(engine.generate("long", "", count=4) for _ in range(4)))
        busy_for = time.monotonic() - started
        stop.set()
        await ticking
    # Were the tweets generated on the loop, the loop would tick only between generations and
    # nearly every tick would wait for one: a large share of busy_for. Measured against
    # busy_for rather than in seconds, the bound holds on a fast machine and on a slow, busy
    # one. The 99th percentile rather than the maximum: one late tick (a collection of what
    # earlier tests left behind, or the OS on a loaded machine: 0.74 s of 2.5 s was seen) is
    # not the engine on the loop.
    late = sorted(lags)[int(0.99 * (len(lags) - 1))]
    assert late < busy_for / 4, (late, max(lags), busy_for)
    assert len(lags) > busy_for / 0.05


def test_missing_gpu_is_a_clear_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(DeviceUnavailableError, match="cuda:99"):
        GenerationEngine(make_settings(generation={"device": "cuda:99"}))


def test_auto_device_picks_a_present_device_in_its_natural_precision() -> None:
    device = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else device.type
    assert device.type == expected
    assert dtype_for(torch.device("cpu")) == torch.float32


def test_bfloat16_weights_serve_on_cpu(engine_factory: Callable[..., GenerationEngine]) -> None:
    engine = engine_factory(dtype="bfloat16")
    tweets = engine.generate_sync("fruit", "fresh", count=2, seed=4).tweets
    assert len(tweets) == 2
    assert all(t.startswith("fresh") for t in tweets)


async def test_close_fails_waiting_requests_and_can_be_repeated(
    engine_factory: Callable[..., GenerationEngine],
) -> None:
    engine = engine_factory(batch_window_ms=1000)
    waiting = asyncio.ensure_future(engine.generate("fruit", "fresh"))
    await asyncio.sleep(0)
    await asyncio.to_thread(engine.close)
    engine.close()
    with pytest.raises(TweetlikeError, match="shutting down"):
        await waiting
    with pytest.raises(TweetlikeError, match="shut down"):
        await engine.generate("fruit", "fresh")
