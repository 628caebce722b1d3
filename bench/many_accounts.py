"""Many accounts at once: LoRA adapters in mixed batches, full fine-tunes, and the
huggingtweets way, side by side.

Sixteen concurrent requests spread over sixteen distinct accounts, 32 new tokens each, on the
GPT-2-small shape (``GPT2Config()``, random weights, no download; a random model writes junk,
which costs what a trained one costs):

- ``lora mixed``: 16 LoRA accounts (rank 8 on ``c_attn``, ``c_proj``, ``c_fc``) on one shared
  base, served by the engine in mixed batches;
- ``full mixed``: 16 full fine-tunes, each its own weights (all loaded), served by the engine;
- ``... burst``: the same 16 requests all for one account, the single-account burst;
- ``pipeline``: the huggingtweets way, one ``transformers.pipeline()`` per (full) account,
  called one request after another (pipelines are built outside the timing).

Rounds interleave the variants; medians are shown. Then the memory side: the resident memory
(RSS) that 256 loaded LoRA accounts add to a process holding their base, and how long a cold
account takes to load (its base and tokenizer already loaded).

    .venv/bin/python bench/many_accounts.py
    .venv/bin/python bench/many_accounts.py --quick      # fewer rounds and adapters
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, pipeline
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lora_batching import make_adapters
from support import PROMPTS

from bot.base_models import weights_fingerprint
from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.generation.novelty import NoveltyIndex
from bot.generation.registry import ModelRegistry
from bot.model_store import METADATA_FILE, NOVELTY_FILE, ModelMetadata, ModelStoreReader
from bot.training.publish import new_version, publish, staging_dir
from bot.training.tiny import EOS, build_tiny_tokenizer

ACCOUNTS = 16
NEW_TOKENS = 32
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TARGET_VS_PIPELINE = 5.0
TARGET_VS_BURST = 1.5
TARGET_MB_PER_ADAPTER = 10.0
TARGET_COLD_LOAD_MS = 100.0


def build_base(folder: Path) -> str:
    """The shared random GPT-2-small base, with a tokenizer that names every id; returns
    its fingerprint as adapters record it."""
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer([p.lower() for p in PROMPTS] * 4, vocab_size=512)
    config = GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    # A random model samples any id; give every id a word so no output is empty.
    tokenizer.add_tokens([f" w{i}" for i in range(config.vocab_size - len(tokenizer))])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return weights_fingerprint(GPT2LMHeadModel.from_pretrained(folder))


def publish_account(
    models_dir: Path,
    name: str,
    sources: list[Path],
    metadata: dict[str, object],
    novelty: Path,
) -> None:
    """Publish ``name`` from hard links to ``sources`` (weights and tokenizer files)."""
    folder = staging_dir(models_dir, name)
    for source in [*sources, novelty]:
        os.link(source, folder / source.name)
    (folder / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "top_p": 0.95,
                "temperature": 1.0,
                "max_new_tokens": NEW_TOKENS,
                "min_new_tokens": NEW_TOKENS,
                "prompt_prefix": EOS,
                "stop_at_newline": True,
            }
        )
    )
    version = new_version()
    record = ModelMetadata(
        handles=[name],
        tweets_downloaded=3000,
        retweets=0,
        short_tweets=0,
        tweets_kept=3000,
        version=version,
        trained_at=datetime.now(UTC).isoformat(),
        **metadata,
    )
    (folder / METADATA_FILE).write_text(record.model_dump_json())
    publish(models_dir, name, folder, version, keep_versions=1)


def build_store(models_dir: Path, adapters_wanted: int) -> None:
    """Base, 16 full accounts and ``adapters_wanted`` LoRA accounts (their weights cycle
    through 16 random adapters)."""
    base = models_dir / ".bases" / "random-gpt2-small"
    base.mkdir(parents=True)
    fingerprint = build_base(base)
    # A realistic novelty index: 3,000 tweets of 12 words.
    words = [f"w{i}" for i in range(2000)]
    tweets = [" ".join(words[(i * 31 + j * 17) % 2000] for j in range(12)) for i in range(3000)]
    novelty = models_dir / NOVELTY_FILE
    NoveltyIndex.build(tweets).save(novelty)
    tokenizer_files = [base / f for f in TOKENIZER_FILES if (base / f).is_file()]
    for i in range(ACCOUNTS):
        publish_account(
            models_dir,
            f"full{i}",
            [base / "model.safetensors", base / "config.json", *tokenizer_files],
            {"base_model": "gpt2", "method": "full"},
            novelty,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapters = make_adapters(
            GPT2LMHeadModel.from_pretrained(base), ACCOUNTS, models_dir / ".adapters"
        )
    for i in range(adapters_wanted):
        adapter = adapters[i % len(adapters)]
        publish_account(
            models_dir,
            f"lora{i}",
            [
                adapter / "adapter_config.json",
                adapter / "adapter_model.safetensors",
                *tokenizer_files,
            ],
            {"base_model": str(base), "method": "lora", "base_fingerprint": fingerprint},
            novelty,
        )


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(models_dir: Path, count: int) -> tuple[float, list[float]]:
    """RSS added per loaded adapter (MB) and cold load times (ms) of ``count`` accounts."""
    registry = ModelRegistry(
        ModelStoreReader(models_dir),
        torch.device("cpu"),
        torch.float32,
        capacity=2,
        adapter_capacity=count,
        quantize=True,
    )
    registry.acquire("lora0")  # the base and the shared tokenizer: not an extra account
    gc.collect()
    before = rss_bytes()
    times = []
    for i in range(1, count):
        started = time.perf_counter()
        registry.acquire(f"lora{i}")
        times.append((time.perf_counter() - started) * 1000)
    gc.collect()
    added = (rss_bytes() - before) / (count - 1) / 1e6
    registry.clear()
    return added, times


async def burst(engine: GenerationEngine, names: list[str]) -> float:
    """Seconds for one request per name, all sent at once."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(engine.generate(name, PROMPTS[i % len(PROMPTS)]) for i, name in enumerate(names))
    )
    seconds = time.perf_counter() - started
    assert all(len(r.tweets) == 1 for r in results)
    return seconds


def pipeline_seconds(models_dir: Path, account: int, device: str) -> float:
    """One request through a fresh pipeline of one full account (building it untimed)."""
    generator = pipeline("text-generation", model=str(models_dir / f"full{account}"), device=device)
    prompt = PROMPTS[account % len(PROMPTS)]
    generator(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)  # warm-up
    started = time.perf_counter()
    generator(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 64 adapters")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--adapters", type=int, default=256, help="accounts for memory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.adapters = 2, 64
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="tweetlike-accounts-") as tmp:
        models_dir = Path(tmp)
        build_store(models_dir, max(args.adapters, ACCOUNTS))
        per_adapter_mb, load_ms = measure_memory(models_dir, args.adapters)
        settings = Settings(
            storage={"models_dir": str(models_dir)},
            generation={
                "device": args.device,
                "max_loaded_models": ACCOUNTS + 1,
                "max_batch_size": 16,
                "max_new_tokens": NEW_TOKENS,
                "max_queue": 1000,
                "request_timeout_seconds": 3600,
                "quantize": args.quantize,
            },
        )
        variants = {
            "lora mixed": [f"lora{i}" for i in range(ACCOUNTS)],
            "lora burst": ["lora0"] * ACCOUNTS,
            "full mixed": [f"full{i}" for i in range(ACCOUNTS)],
            "full burst": ["full0"] * ACCOUNTS,
        }
        seconds: dict[str, list[float]] = {name: [] for name in [*variants, "pipeline"]}
        with GenerationEngine(settings) as engine:
            quantized = engine.stats().quantized
            for names in variants.values():  # load everything and warm up
                asyncio.run(burst(engine, names))
            for round_ in range(args.rounds):
                for variant, names in variants.items():
                    seconds[variant].append(asyncio.run(burst(engine, names)))
                for account in (2 * round_, 2 * round_ + 1):
                    seconds["pipeline"].append(pipeline_seconds(models_dir, account, args.device))
    print(
        f"GPT-2-small shape, {ACCOUNTS} concurrent requests, {NEW_TOKENS} new tokens each, "
        f"device {args.device}, engine int8 {'on' if quantized else 'off'} (pipeline fp32), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
        f"{args.rounds} interleaved rounds\n"
    )
    tokens_per_s = {
        name: NEW_TOKENS * ACCOUNTS / statistics.median(values)
        for name, values in seconds.items()
        if name != "pipeline"
    }
    tokens_per_s["pipeline"] = NEW_TOKENS / statistics.median(seconds["pipeline"])
    print("| variant | accounts | tokens/s | vs pipeline |")
    print("|---|---|---|---|")
    print(f"| pipeline, one request after another | 16 | {tokens_per_s['pipeline']:.0f} | 1.00x |")
    for variant, names in variants.items():
        print(
            f"| engine, {variant} | {len(set(names))} | {tokens_per_s[variant]:.0f} | "
            f"{tokens_per_s[variant] / tokens_per_s['pipeline']:.2f}x |"
        )
    load_ms.sort()
    p95 = load_ms[min(len(load_ms) - 1, round(0.95 * (len(load_ms) - 1)))]
    print(
        f"\n{args.adapters} LoRA accounts loaded: {per_adapter_mb:.2f} MB resident each "
        f"(RSS delta); cold load median {statistics.median(load_ms):.0f} ms, p95 {p95:.0f} ms, "
        f"max {load_ms[-1]:.0f} ms\n"
    )
    checks = [
        (
            f"lora mixed >= {TARGET_VS_PIPELINE:g}x the sequential pipeline (tokens/s)",
            tokens_per_s["lora mixed"] / tokens_per_s["pipeline"],
            TARGET_VS_PIPELINE,
            True,
        ),
        (
            f"lora mixed within {TARGET_VS_BURST:g}x of the single-account burst (time ratio)",
            tokens_per_s["lora burst"] / tokens_per_s["lora mixed"],
            TARGET_VS_BURST,
            False,
        ),
        (
            f"resident memory per LoRA account <= {TARGET_MB_PER_ADAPTER:g} MB",
            per_adapter_mb,
            TARGET_MB_PER_ADAPTER,
            False,
        ),
        (
            f"cold LoRA account load p95 < {TARGET_COLD_LOAD_MS:g} ms",
            p95,
            TARGET_COLD_LOAD_MS,
            False,
        ),
    ]
    all_met = True
    for label, value, target, higher_is_better in checks:
        met = value >= target if higher_is_better else value <= target
        all_met &= met
        print(f"{'MET   ' if met else 'MISSED'} {label}: {value:.2f}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
