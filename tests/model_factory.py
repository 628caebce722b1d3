"""Publish a small servable model in a test's model store, in well under a second.

The real training pipeline is the slow, complete path; tests that only need *a* model to
generate from use :func:`publish_tiny_model`. With ``train_steps`` the tiny GPT-2 is overfit
on ``texts`` by a plain torch loop, enough for it to say them back (novelty and batching
tests rely on that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch

from bot.generation.novelty import NoveltyIndex
from bot.model_store import (
    METADATA_FILE,
    NOVELTY_FILE,
    ModelMetadata,
    ModelStoreReader,
    PublishedModel,
)
from bot.training.publish import new_version, publish, staging_dir
from bot.training.tiny import EOS, build_tiny_model, build_tiny_tokenizer

DEFAULT_TEXTS = (
    "My dream is to fly over the mountains at dawn",
    "Coffee first, then the world can have my attention",
    "Nothing beats a long walk after a rainy afternoon",
)


def publish_tiny_model(
    models_dir: Path,
    name: str,
    texts: Sequence[str] = DEFAULT_TEXTS,
    *,
    train_steps: int = 0,
    seed: int = 0,
    max_new_tokens: int = 24,
    min_new_tokens: int = 0,
    display_name: str | None = None,
) -> PublishedModel:
    """Build, optionally overfit, and atomically publish ``models_dir/<name>``."""
    models_dir = Path(models_dir)
    texts = list(texts)
    tokenizer = build_tiny_tokenizer(texts * 2, vocab_size=512)
    model = build_tiny_model(tokenizer, seed=seed)
    if train_steps:
        _overfit(model, [tokenizer.encode(EOS + t + EOS) for t in texts], train_steps, seed)
    folder = staging_dir(models_dir, name)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    eos = tokenizer.eos_token_id
    generation_config = {
        "do_sample": True,
        "top_p": 0.95,
        "temperature": 1.0,
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens,
        "prompt_prefix": EOS,
        "stop_at_newline": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
    version = new_version()
    metadata = ModelMetadata(
        handles=name.split("-"),
        tweets_downloaded=len(texts),
        retweets=0,
        short_tweets=0,
        tweets_kept=len(texts),
        base_model="tiny",
        version=version,
        trained_at=datetime.now(UTC).isoformat(),
        display_names={h: display_name or h.title() for h in name.split("-")},
    )
    (folder / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    NoveltyIndex.build(texts).save(folder / NOVELTY_FILE)
    publish(models_dir, name, folder, version, keep_versions=3)
    return ModelStoreReader(models_dir).get(name)


def _overfit(model: torch.nn.Module, rows: list[list[int]], steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    # A model this small trains fastest on one thread, and more thrash a busy machine.
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(steps):
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
