"""The novelty guard: near-verbatim copies of training tweets are caught and resampled."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.errors import TweetlikeError
from bot.generation.engine import GenerationEngine
from bot.generation.novelty import NoveltyIndex

TRAINING = [
    "my dream is to sail around the world with my best friends one day",
    "my dream is to open a tiny bakery that sells warm bread every morning",
    "nothing beats a quiet sunday with a good book and strong coffee",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def index() -> NoveltyIndex:
    return NoveltyIndex.build(TRAINING)


def test_verbatim_copy_is_caught_whatever_the_case_and_punctuation(index: NoveltyIndex) -> None:
    assert index.is_copy("My dream is to sail around the world with my best friends one day!")


def test_near_copy_with_one_word_changed_is_caught(index: NoveltyIndex) -> None:
    assert index.is_copy(
        "my dream is to open a tiny bakery that sells warm bread every single morning"
    )


def test_new_tweet_sharing_only_the_prompt_is_not_a_copy(index: NoveltyIndex) -> None:
    text = "my dream is to sail around the moon in a paper boat made of old maps"
    assert not index.is_copy(text, prompt="my dream is to sail around")


def test_index_survives_save_and_load(index: NoveltyIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "novelty.bin")
    loaded = NoveltyIndex.load(tmp_path / "novelty.bin")
    assert len(loaded) == len(TRAINING)
    assert loaded.is_copy(TRAINING[2])


def test_truncated_index_file_is_refused(index: NoveltyIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "novelty.bin")
    data = (tmp_path / "novelty.bin").read_bytes()
    (tmp_path / "novelty.bin").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="truncated"):
        NoveltyIndex.load(tmp_path / "novelty.bin")


# The parrot learnt this one too, but the guard does not know it: to the guard, the parrot's
# own words.
UNLISTED = "my dream is to paint every lighthouse along the rocky northern coast"


@pytest.fixture(scope="module")
def parrot_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that memorised TRAINING and UNLISTED. Overfit this far, it continues a prompt
    with the tweet it learnt for it word for word (checked over 30 seeds), so these tests do
    not depend on what a sample happens to be."""
    models_dir = tmp_path_factory.mktemp("models")
    publish_tiny_model(
        models_dir, "parrot", [*TRAINING, UNLISTED], train_steps=300, novelty_texts=TRAINING
    )
    return models_dir


@pytest.fixture
def parrot(
    make_settings: Callable[..., Settings], parrot_store: Path
) -> Callable[[bool, str], list[str]]:
    """Generate from the parrot, with or without the guard."""

    def generate(guard: bool, prompt: str) -> list[str]:
        settings = make_settings(
            storage={"models_dir": str(parrot_store)}, generation={"novelty_guard": guard}
        )
        with GenerationEngine(settings) as engine:
            return engine.generate_sync("parrot", prompt, count=5, seed=11).tweets

    return generate


def test_without_the_guard_an_overfit_model_repeats_training_tweets(
    parrot: Callable[[bool, str], list[str]], index: NoveltyIndex
) -> None:
    prompt = "my dream is to sail"
    assert any(index.is_copy(t, prompt) for t in parrot(False, prompt))


def test_with_the_guard_a_prompt_the_model_only_knows_copies_for_gets_no_copy(
    parrot: Callable[[bool, str], list[str]],
    index: NoveltyIndex,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first samples are copies; warmer retries may find new words or may not, so the
    # answer is either tweets or the refusal. Either way, never a copy.
    prompt = "my dream is to sail"
    caplog.set_level(logging.DEBUG, logger="bot.generation.engine")
    try:
        tweets = parrot(True, prompt)
    except TweetlikeError as refused:
        assert "no usable original tweet" in str(refused)
        tweets = []
    assert not any(index.is_copy(t, prompt) for t in tweets)
    assert "discarded a copy of a training tweet" in caplog.text


def test_with_the_guard_tweets_that_copy_nothing_are_served(
    parrot: Callable[[bool, str], list[str]], index: NoveltyIndex
) -> None:
    prompt = "my dream is to paint"
    tweets = parrot(True, prompt)
    assert len(tweets) == 5
    assert all(t.startswith(prompt) and not index.is_copy(t, prompt) for t in tweets)


def test_a_large_account_s_index_loads_in_little_memory(tmp_path: Path) -> None:
    # Hundreds of LoRA accounts stay loaded at once: 3,000 tweets of 12 words are about
    # 25,000 hashes, 0.2 MB as arrays of 8-byte integers (Python sets would take 2-3 MB).
    words = [f"w{i}" for i in range(500)]
    tweets = [" ".join(words[(i * 7 + j * 13) % 500] for j in range(12)) for i in range(3000)]
    NoveltyIndex.build(tweets).save(tmp_path / "novelty.bin")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        loaded = NoveltyIndex.load(tmp_path / "novelty.bin")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(loaded) == len(set(tweets))
    assert held < 600_000, held
    assert loaded.is_copy(tweets[1234])
