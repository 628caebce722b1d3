"""The ``tiny`` base model: a small GPT-2 and byte-level BPE tokenizer built locally.

Tests, the demo and offline users get a real GPT-2 architecture with no download. The
tokenizer is trained on the tweets being fine-tuned on, so a small vocabulary still covers
the account's words; it is saved with the model like any other tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

EOS = "<|endoftext|>"


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> GPT2TokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts) or ["hello world"],
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        show_progress=False,
    )
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=256)
    tokenizer.bos_token = EOS
    tokenizer.eos_token = EOS
    tokenizer.unk_token = EOS
    return tokenizer


def build_tiny_model(tokenizer: GPT2TokenizerFast, seed: int = 42) -> GPT2LMHeadModel:
    import torch

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)
