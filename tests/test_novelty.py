"""The novelty guard: near-verbatim copies of training tweets are caught and resampled."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from model_factory import publish_tiny_model

from bot.config import Settings
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


@pytest.fixture
def parrot(make_settings: Callable[..., Settings]) -> Callable[[bool], list[str]]:
    """Generate from a model that memorised TRAINING, with or without the guard."""
    settings = make_settings()
    publish_tiny_model(settings.storage.models_dir, "parrot", TRAINING, train_steps=40)

    def generate(guard: bool) -> list[str]:
        guarded = make_settings(generation={"novelty_guard": guard})
        with GenerationEngine(guarded) as engine:
            return engine.generate_sync("parrot", "my dream is", count=5, seed=11).tweets

    return generate


def test_without_the_guard_an_overfit_model_repeats_training_tweets(
    parrot: Callable[[bool], list[str]], index: NoveltyIndex
) -> None:
    assert any(index.is_copy(t, "my dream is") for t in parrot(False))


def test_with_the_guard_no_result_copies_a_training_tweet(
    parrot: Callable[[bool], list[str]], index: NoveltyIndex
) -> None:
    tweets = parrot(True)
    assert len(tweets) == 5
    assert not any(index.is_copy(t, "my dream is") for t in tweets)


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
