"""The shared tiny base for LoRA: a tiny GPT-2 that has read some English before adapting.

A LoRA adapter only learns low-rank changes to a frozen base, so on random weights (and
random, frozen embeddings) it learns almost nothing. Measured on an account the base never
saw (``bench/lora_training.py``, table "unseen": half the sample account's tweets build the
base, adapters learn the other half), eval loss per token:

    base                          base alone   with a rank-8 adapter   pre-training
    random                        7.17         7.02                    -
    pre-trained 12 epochs         5.84         5.76                    2.5 s
    pre-trained 24 epochs         5.70         5.45                    4.7 s
    pre-trained 36 / 48 epochs    5.80 / 6.08  5.36 / 5.34             12 / 16 s

So the shared base is pre-trained, deterministically, for ``PRETRAIN_EPOCHS`` with the
full-``tiny`` learning rate on the bundled sample account's tweets (twice the text of that
table's half, so about 10 s on one core), once per model store.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

from bot.training.dataset import pack, token_stream
from bot.training.recipes import TINY_FULL, Hyperparameters
from bot.training.tiny import build_tiny_model, build_tiny_tokenizer
from bot.training.trainer import fine_tune

PRETRAIN_BLOCK_SIZE = 128
PRETRAIN_EPOCHS = 24


def build_tiny_base(
    texts: Sequence[str], *, seed: int, epochs: int = PRETRAIN_EPOCHS
) -> tuple[GPT2LMHeadModel, GPT2TokenizerFast]:
    """A tokenizer trained on ``texts`` and a seeded tiny GPT-2 pre-trained on them."""
    tokenizer = build_tiny_tokenizer(texts)
    model = build_tiny_model(tokenizer, seed=seed)
    if epochs:
        blocks = pack(token_stream(texts, tokenizer), PRETRAIN_BLOCK_SIZE)
        hp = Hyperparameters(
            epochs=epochs,
            learning_rate=TINY_FULL.learning_rate,
            batch_size=8,
            block_size=PRETRAIN_BLOCK_SIZE,
            seed=seed,
        )
        fine_tune(model, blocks, blocks[:0], hp, torch.device("cpu"))
    model.eval()
    return model, tokenizer
