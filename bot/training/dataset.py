"""From cleaned tweets to training blocks: size check, validation split, balancing, packing.

Packing follows run_clm.py: every tweet starts with ``<|endoftext|>``, the token stream is
cut into contiguous blocks of ``block_size`` tokens and the ragged tail is dropped, so no
block holds padding and every position trains. Generation then starts from
``<|endoftext|>`` + prompt, which is exactly how every training tweet began.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from bot.errors import TrainingError
from bot.training.cleaning import CleanedAccount

EOS = "<|endoftext|>"
MIN_CHARACTERS = 6_000
RECOMMENDED_CHARACTERS = 40_000


def check_size(account: CleanedAccount) -> str | None:
    """Refuse an account too small to learn from; return a warning for a small one."""
    chars = account.characters
    counts = (
        f"{len(account.kept):,} usable tweets ({chars:,} characters; "
        f"{account.downloaded:,} downloaded, {account.retweets:,} retweets, "
        f"{account.short:,} short)"
    )
    if chars < MIN_CHARACTERS:
        raise TrainingError(
            f"@{account.handle} has only {counts}; at least {MIN_CHARACTERS:,} characters "
            "are needed to train: fetch or import more tweets"
        )
    if chars < RECOMMENDED_CHARACTERS:
        return (
            f"@{account.handle} has {counts}; with under {RECOMMENDED_CHARACTERS:,} "
            "characters the model imitates the account less well"
        )
    return None


def split_validation(
    texts: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded shuffle, then hold out ``fraction`` (at least one tweet when fraction > 0)."""
    shuffled = list(texts)
    random.Random(seed).shuffle(shuffled)
    if fraction <= 0 or len(shuffled) < 2:
        return shuffled, []
    held_out = max(1, round(len(shuffled) * fraction))
    return shuffled[held_out:], shuffled[:held_out]


def balance(per_account: dict[str, list[str]], seed: int) -> list[str]:
    """Oversample smaller accounts so each contributes as many tweets per epoch as the largest.

    A combined ("cyborg") model trained on the plain union would mostly speak like the
    account with the most tweets. Repeating each smaller account's tweets whole, then a
    seeded sample of them for the remainder, gives every account the same share of each
    epoch without throwing away any of the largest account's data. The result is shuffled
    so the accounts interleave inside blocks.
    """
    rng = random.Random(seed)
    target = max((len(texts) for texts in per_account.values()), default=0)
    combined: list[str] = []
    for handle in sorted(per_account):
        texts = per_account[handle]
        if not texts:
            continue
        repeats, remainder = divmod(target, len(texts))
        combined.extend(texts * repeats)
        combined.extend(rng.sample(texts, remainder))
    rng.shuffle(combined)
    return combined


def token_stream(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``<|endoftext|>tweet<|endoftext|>tweet...<|endoftext|>`` as token ids.

    Tweets are encoded one by one (not as one huge string) so no tokenizer length limit
    applies; the final end-of-text teaches the model to stop after the last tweet too.
    """
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    for tweet_ids in encoded:
        ids.append(eos_id)
        ids.extend(tweet_ids)
    if ids:
        ids.append(eos_id)
    return ids


def pack(ids: Sequence[int], block_size: int) -> torch.Tensor:
    """Cut ``ids`` into ``[n_blocks, block_size]``; a stream shorter than one block is one
    shorter block (still no padding), which keeps tiny validation splits measurable."""
    if not ids:
        return torch.empty((0, block_size), dtype=torch.long)
    if len(ids) < block_size:
        return torch.tensor([list(ids)], dtype=torch.long)
    usable = len(ids) - len(ids) % block_size
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, block_size)


@dataclass(frozen=True)
class SplitTexts:
    """Training tweets (balanced across accounts) and held-out validation tweets."""

    train: list[str]
    validation: list[str]


def build_splits(
    accounts: Sequence[CleanedAccount], validation_fraction: float, seed: int
) -> SplitTexts:
    """Split each account on its own, so every account is in the validation set, then
    balance only the training side (validation measures the real tweets, once each)."""
    train: dict[str, list[str]] = {}
    validation: list[str] = []
    for account in accounts:
        kept_train, kept_val = split_validation(account.kept, validation_fraction, seed)
        train[account.handle] = kept_train
        validation.extend(kept_val)
    return SplitTexts(train=balance(train, seed), validation=validation)
