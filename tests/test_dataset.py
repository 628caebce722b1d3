"""Size thresholds, validation split, balancing of combined models, and packing."""

from __future__ import annotations

from collections import Counter

import pytest
from transformers import PreTrainedTokenizerBase

from bot.errors import TrainingError
from bot.training.cleaning import CleanedAccount
from bot.training.dataset import (
    EOS,
    balance,
    build_splits,
    check_size,
    pack,
    split_validation,
    token_stream,
)
from bot.training.tiny import build_tiny_tokenizer


def account(handle: str, kept: list[str], retweets: int = 2, short: int = 1) -> CleanedAccount:
    return CleanedAccount(
        handle=handle,
        kept=kept,
        downloaded=len(kept) + retweets + short,
        retweets=retweets,
        short=short,
        newest_tweet_id="1",
    )


def texts_of_length(total_chars: int, tweet_chars: int = 100) -> list[str]:
    """Tweets whose ``<|endoftext|>``-joined size is close to ``total_chars``."""
    count = max(1, total_chars // (tweet_chars + len(EOS)))
    return [f"{i:04d} " + "x" * (tweet_chars - 5) for i in range(count)]


def test_accounts_under_6000_characters_are_refused_with_their_counts() -> None:
    small = account("pip", texts_of_length(5_000), retweets=9, short=4)
    with pytest.raises(TrainingError) as refused:
        check_size(small)
    message = str(refused.value)
    assert message.startswith(f"@pip has only {len(small.kept)} usable tweets")
    assert f"{small.characters:,} characters" in message
    assert f"{len(small.kept) + 13} downloaded, 9 retweets, 4 short" in message
    assert "at least 6,000" in message
    assert "\n" not in message


def test_accounts_under_40000_characters_train_with_a_warning() -> None:
    warning = check_size(account("pip", texts_of_length(20_000)))
    assert warning is not None and "40,000" in warning


def test_accounts_over_40000_characters_train_without_warning() -> None:
    assert check_size(account("pip", texts_of_length(41_000))) is None


def test_validation_split_is_seeded_and_holds_out_the_fraction() -> None:
    texts = [f"tweet {i}" for i in range(100)]
    train, validation = split_validation(texts, 0.1, seed=7)
    assert len(validation) == 10 and len(train) == 90
    assert sorted(train + validation) == sorted(texts)
    assert split_validation(texts, 0.1, seed=7) == (train, validation)
    assert split_validation(texts, 0.1, seed=8) != (train, validation)


def test_validation_split_keeps_at_least_one_tweet() -> None:
    _, validation = split_validation(["a b c", "d e f", "g h i"], 0.01, seed=1)
    assert len(validation) == 1


def test_zero_validation_fraction_holds_out_nothing() -> None:
    train, validation = split_validation(["a b c", "d e f"], 0.0, seed=1)
    assert validation == [] and len(train) == 2


def test_combined_models_give_each_account_an_equal_share() -> None:
    big = [f"big {i}" for i in range(10)]
    small = [f"small {i}" for i in range(3)]
    combined = balance({"big": big, "small": small}, seed=3)
    shares = Counter(text.split()[0] for text in combined)
    assert shares == {"big": 10, "small": 10}
    assert Counter(combined)["big 0"] == 1
    # every small tweet appears 3 or 4 times: whole repeats plus a sample for the remainder
    assert {Counter(combined)[t] for t in small} <= {3, 4}


def test_validation_uses_each_accounts_real_tweets_once() -> None:
    splits = build_splits(
        [account("big", [f"big {i}" for i in range(40)]), account("tiny", ["t 1", "t 2"])],
        validation_fraction=0.25,
        seed=5,
    )
    assert Counter(t.split()[0] for t in splits.validation) == {"big": 10, "t": 1}
    assert Counter(t.split()[0] for t in splits.train) == {"big": 30, "t": 30}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(["the moon and the stars", "bread and butter"] * 20)


def test_each_tweet_starts_with_endoftext_and_the_stream_ends_with_it(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = token_stream(["the moon", "bread and butter"], tokenizer)
    assert tokenizer.decode(ids) == f"{EOS}the moon{EOS}bread and butter{EOS}"


def test_blocks_are_full_contiguous_and_unpadded(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = token_stream(["the moon and the stars"] * 30, tokenizer)
    blocks = pack(ids, block_size=16)
    assert blocks.shape == (len(ids) // 16, 16)
    assert blocks.flatten().tolist() == ids[: blocks.numel()]


def test_a_stream_shorter_than_a_block_is_one_short_block(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = token_stream(["the moon"], tokenizer)
    blocks = pack(ids, block_size=64)
    assert blocks.tolist() == [ids]
