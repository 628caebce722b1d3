"""Publish a small servable model in a test's model store, in well under a second.

The real training pipeline is the slow, complete path; tests that only need *a* model to
generate from use :func:`publish_tiny_model` (a full fine-tune) or :func:`publish_lora_model`
(a PEFT LoRA adapter on the shared tiny base, trained with ``peft`` directly). With
``train_steps`` the model is overfit on ``texts`` by a plain torch loop, enough for it to say
them back (novelty and batching tests rely on that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from bot.base_models import TINY_NAME, ensure_tiny_base, weights_fingerprint
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
    novelty_texts: Sequence[str] | None = None,
) -> PublishedModel:
    """Build, optionally overfit, and atomically publish ``models_dir/<name>``.

    ``novelty_texts`` (default: ``texts``) are the tweets the novelty guard knows: a test can
    teach the model more than the guard knows, words the guard takes as the model's own.
    """
    models_dir = Path(models_dir)
    texts = list(texts)
    tokenizer = build_tiny_tokenizer(texts * 2, vocab_size=512)
    model = build_tiny_model(tokenizer, seed=seed)
    if train_steps:
        _overfit(model, [tokenizer.encode(EOS + t + EOS) for t in texts], train_steps, seed)
    folder = staging_dir(models_dir, name)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return _finish(
        models_dir,
        name,
        folder,
        texts,
        tokenizer,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        display_name=display_name,
        novelty_texts=novelty_texts,
    )


def publish_lora_model(
    models_dir: Path,
    name: str,
    texts: Sequence[str] = DEFAULT_TEXTS,
    *,
    train_steps: int = 0,
    seed: int = 0,
    rank: int = 4,
    alpha: int = 8,
    targets: Sequence[str] = ("c_attn", "c_proj", "c_fc"),
    max_new_tokens: int = 24,
    min_new_tokens: int = 0,
    base_fingerprint: str | None = None,
    **lora_options: object,
) -> PublishedModel:
    """Train (``train_steps`` > 0) and publish a PEFT LoRA adapter on the store's shared
    tiny base, as ``tweetlike train --method lora`` lays it out.

    ``base_fingerprint`` overrides the recorded fingerprint (a model trained on another
    base); ``lora_options`` go to ``peft.LoraConfig`` (``use_rslora``, ``rank_pattern``...).
    Untrained, PEFT's B matrices are zero: ``seed`` then fills them with noise so the adapter
    still changes what the base says.
    """
    models_dir = Path(models_dir)
    texts = list(texts)
    base = ensure_tiny_base(models_dir)  # built once per process, copied after that
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    fingerprint = weights_fingerprint(model)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        fan_in_fan_out=True,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        **lora_options,
    )
    peft_model = get_peft_model(model, config)
    if train_steps:
        rows = [tokenizer.encode(EOS + t + EOS) for t in texts]
        _overfit(peft_model, rows, train_steps, seed, lr=3e-2)
    else:
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(0, 0.5)
    folder = staging_dir(models_dir, name)
    peft_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return _finish(
        models_dir,
        name,
        folder,
        texts,
        tokenizer,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        method="lora",
        base_fingerprint=base_fingerprint or fingerprint,
    )


def _finish(
    models_dir: Path,
    name: str,
    folder: Path,
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_new_tokens: int,
    min_new_tokens: int,
    display_name: str | None = None,
    method: str = "full",
    base_fingerprint: str | None = None,
    novelty_texts: Sequence[str] | None = None,
) -> PublishedModel:
    """Write generation config, metadata and novelty index beside the weights; publish."""
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
        base_model=TINY_NAME,
        method=method,
        base_fingerprint=base_fingerprint,
        version=version,
        trained_at=datetime.now(UTC).isoformat(),
        display_names={h: display_name or h.title() for h in name.split("-")},
    )
    (folder / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    NoveltyIndex.build(texts if novelty_texts is None else novelty_texts).save(
        folder / NOVELTY_FILE
    )
    publish(models_dir, name, folder, version, keep_versions=3)
    return ModelStoreReader(models_dir).get(name)


def _overfit(
    model: torch.nn.Module, rows: list[list[int]], steps: int, seed: int, lr: float = 3e-3
) -> None:
    """Fit ``rows`` until the model says them back, for any seed and on any machine.

    The learning rate falls linearly to zero: at a constant rate a model this small spikes out
    of its fit now and then, and a run that ends in a spike says word salad instead (measured:
    final loss 0.16 to 0.79 over 16 seeds at 1e-2 constant, 0.16 to 0.19 over 24 with decay).
    """
    torch.manual_seed(seed)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=steps)
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
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
