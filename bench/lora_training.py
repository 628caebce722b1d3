"""LoRA versus full fine-tuning: held-out loss by rank and learning rate, and what it costs.

Everything here runs offline, on the bundled sample account (``bot/assets/sample_tweets.txt``,
cleaned as ``tweetlike train`` cleans it) and the real training code (``fine_tune``,
``with_adapter``, ``pack``, ``token_stream``). Three tables:

1. **sample**: the demo's case. Full fine-tuning of a per-account ``tiny`` model (the default
   recipe) against LoRA adapters on the shared tiny base as ``ensure_tiny_base`` builds it,
   by rank and learning rate. Caveat: the shared base is built from the sample tweets
   themselves (its tokenizer, and its pre-training if any), so LoRA is flattered here.
2. **unseen account**: the fair version. The sample's kept tweets are split by position into
   two disjoint halves: a base (tokenizer, and optionally a short pre-training) is built from
   the first, adapters and a from-scratch full model are trained and evaluated on the
   second. This is the question "does a base that knows some English help an adapter for an
   account it never saw?".
3. **gpt2-small shape** (``GPT2Config()``, 124M, random weights, no download): seconds per
   training step and trainable/stored size, full against LoRA. A random base says nothing
   about quality, so no loss is reported for it.

Losses are per token and, because the tokenizers differ, also in nats per character of
held-out text (loss x tokens / characters), which compares across tokenizers.

    .venv/bin/python bench/lora_training.py            # all three tables
    .venv/bin/python bench/lora_training.py --quick    # fewer settings
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.base_models import TINY_BASE_SEED, ensure_tiny_base
from bot.sources.tweets import Tweet
from bot.training.cleaning import clean_account
from bot.training.dataset import build_splits, pack, token_stream
from bot.training.hub import load_pretrained
from bot.training.lora import with_adapter
from bot.training.recipes import TINY_FULL, TINY_LORA, Hyperparameters, LoraShape
from bot.training.tiny import build_tiny_model, build_tiny_tokenizer
from bot.training.tiny_base import build_tiny_base
from bot.training.trainer import fine_tune

SAMPLE = Path(__file__).resolve().parent.parent / "bot" / "assets" / "sample_tweets.txt"
CPU = torch.device("cpu")
SEED = 42
TABLES = ("sample", "unseen", "gpt2-small")


@dataclass(frozen=True)
class Result:
    table: str
    setup: str
    rank: str
    learning_rate: float
    epochs: int
    trainable: int
    eval_loss: float
    nats_per_char: float
    seconds: float


def sample_account() -> list[str]:
    lines = [line.strip() for line in SAMPLE.read_text("utf-8").splitlines() if line.strip()]
    tweets = [Tweet(id=str(1000 + i), text=text) for i, text in enumerate(lines)]
    return clean_account("sample", tweets).kept


def hyperparameters(lr: float, epochs: int, lora: LoraShape | None = None) -> Hyperparameters:
    return Hyperparameters(
        epochs=epochs, learning_rate=lr, batch_size=8, block_size=128, seed=SEED, lora=lora
    )


def run(
    table: str,
    setup: str,
    model: PreTrainedModel,
    tokenizer,
    texts: Sequence[str],
    hp: Hyperparameters,
) -> Result:
    """Split ``texts`` as the pipeline does, train, and measure the held-out loss."""
    account = clean_account("bench", [Tweet(id=str(i), text=t) for i, t in enumerate(texts)])
    splits = build_splits([account], 0.1, SEED)
    train = pack(token_stream(splits.train, tokenizer), hp.block_size)
    validation_stream = token_stream(splits.validation, tokenizer)
    validation = pack(validation_stream, hp.block_size)
    if hp.lora is not None:
        torch.manual_seed(SEED)
        model = with_adapter(model, hp.lora, setup)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    started = time.monotonic()
    result = fine_tune(model, train, validation, hp, CPU)
    seconds = time.monotonic() - started
    assert result.eval_loss is not None
    evaluated_tokens = validation.numel()
    characters = sum(len(t) + 1 for t in splits.validation)  # +1: the end-of-text marker
    share = evaluated_tokens / len(validation_stream)  # packing drops the ragged tail
    return Result(
        table,
        setup,
        str(hp.lora.rank) if hp.lora else "-",
        hp.learning_rate,
        hp.epochs,
        trainable,
        result.eval_loss,
        result.eval_loss * evaluated_tokens / (characters * share),
        seconds,
    )


def sample_table(quick: bool, store: Path) -> list[Result]:
    kept = sample_account()
    results = []
    tokenizer = build_tiny_tokenizer(kept)
    model = build_tiny_model(tokenizer, seed=SEED)
    hp = hyperparameters(TINY_FULL.learning_rate, TINY_FULL.epochs)
    results.append(run("sample", "full, per-account tiny", model, tokenizer, kept, hp))
    base_dir = ensure_tiny_base(store)
    ranks = (8,) if quick else (4, 8, 16, 32)
    rates = (TINY_LORA.learning_rate,) if quick else (3e-3, 1e-2, 3e-2)
    grid = {(r, TINY_LORA.learning_rate) for r in ranks} | {(8, lr) for lr in rates}
    for rank, lr in sorted(grid):
        base, base_tokenizer = load_pretrained(str(base_dir))
        shape = LoraShape(rank=rank, alpha=2 * rank, dropout=0.05)
        hp = hyperparameters(lr, TINY_LORA.epochs, shape)
        results.append(run("sample", "lora, shared tiny base", base, base_tokenizer, kept, hp))
    return results


def unseen_table(quick: bool, pretrain_epochs: Sequence[int]) -> list[Result]:
    kept = sample_account()
    base_texts, account = kept[0::2], kept[1::2]
    results = []
    tokenizer = build_tiny_tokenizer(account)
    hp = hyperparameters(TINY_FULL.learning_rate, TINY_FULL.epochs)
    model = build_tiny_model(tokenizer, seed=SEED)
    results.append(run("unseen", "full, per-account tiny", model, tokenizer, account, hp))
    rates = (TINY_LORA.learning_rate,) if quick else (3e-3, 1e-2, 3e-2)
    ranks = () if quick else (4, 16, 32)
    for epochs in pretrain_epochs:
        started = time.monotonic()
        base, base_tokenizer = build_tiny_base(base_texts, seed=TINY_BASE_SEED, epochs=epochs)
        took = time.monotonic() - started
        base_kind = f"base pre-trained {epochs} ep ({took:.1f}s)" if epochs else "random base"
        alone = hyperparameters(0.0, 0)
        results.append(run("unseen", f"{base_kind} alone", base, base_tokenizer, account, alone))
        setup = f"lora, {base_kind}"
        grid = [(8, lr) for lr in rates] + [(r, TINY_LORA.learning_rate) for r in ranks]
        for rank, lr in grid:
            base, base_tokenizer = build_tiny_base(base_texts, seed=TINY_BASE_SEED, epochs=epochs)
            shape = LoraShape(rank=rank, alpha=2 * rank, dropout=0.05)
            hp = hyperparameters(lr, TINY_LORA.epochs, shape)
            results.append(run("unseen", setup, base, base_tokenizer, account, hp))
    return results


def gpt2_small_table(steps: int) -> list[str]:
    """Seconds per step (batch 8 x 128 tokens) and sizes, full against LoRA rank 8."""
    rows = []
    torch.set_num_threads(2)
    batch = torch.randint(0, 50257, (8, 128), generator=torch.Generator().manual_seed(SEED))
    for method in ("full", "lora"):
        torch.manual_seed(SEED)
        model = GPT2LMHeadModel(GPT2Config())
        if method == "lora":
            model = with_adapter(model, LoraShape(rank=8, alpha=16, dropout=0.05), "gpt2-small")
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        times = []
        for _ in range(steps + 1):
            started = time.monotonic()
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.monotonic() - started)
        count = sum(p.numel() for p in trainable)
        rows.append(
            f"| {method} | {count / 1e6:.2f}M | {count * 4 / 2**20:.1f} MiB "
            f"| {statistics.median(times[1:]):.2f} s |"
        )
    return rows


def print_results(results: list[Result]) -> None:
    print("| table | setup | rank | lr | epochs | trainable | eval loss | nats/char | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.table} | {r.setup} | {r.rank} | {r.learning_rate:g} | {r.epochs} "
            f"| {r.trainable:,} | {r.eval_loss:.3f} | {r.nats_per_char:.3f} | {r.seconds:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ranks and rates")
    parser.add_argument(
        "--tables", nargs="+", choices=TABLES, default=list(TABLES), help="which tables to run"
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, nargs="+", default=[0, 4, 12], help="table 2 bases"
    )
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    results: list[Result] = []
    if "sample" in args.tables:
        with tempfile.TemporaryDirectory() as store:
            results += sample_table(args.quick, Path(store))
    if "unseen" in args.tables:
        results += unseen_table(args.quick, args.pretrain_epochs)
    if results:
        print_results(results)
    if "gpt2-small" in args.tables:
        print("\n| gpt2-small shape | trainable | trainable fp32 | s/step (8x128, 2 threads) |")
        print("|---|---|---|---|")
        for row in gpt2_small_table(steps=1 if args.quick else 3):
            print(row)


if __name__ == "__main__":
    main()
