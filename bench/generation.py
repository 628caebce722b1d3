"""Generation throughput: the huggingtweets way versus the tweetlike engine, side by side.

The huggingtweets way is ``transformers.pipeline("text-generation")`` called once per
request, one request after another. The engine serves the same model with 1, 4 and 16
concurrent clients (each sends its next request as soon as the last one is answered) while
an asyncio ticker measures how late the event loop wakes up.

Both sides generate exactly ``--new-tokens`` tokens per tweet (``min_new_tokens`` equals
``max_new_tokens``), so they do equal work. Two model sizes: ``tiny`` (bot.training.tiny)
and a randomly initialised GPT-2-small shape (``GPT2Config()``, 124M parameters, no
download); a random model writes junk, which is fine for timing.

    .venv/bin/python bench/generation.py            # full run
    .venv/bin/python bench/generation.py --quick    # short run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import support
import torch
from transformers import pipeline

from bot.config import Settings
from bot.generation.device import dtype_for, resolve_device
from bot.generation.engine import GenerationEngine
from bot.training.tiny import EOS, build_tiny_model, build_tiny_tokenizer

PROMPTS = ["My dream is", "Today I learned", "Hot take:", "", "The best thing about"]
CONCURRENCY = (1, 4, 16)
TARGET_SPEEDUP = {"tiny": 5.0, "gpt2-small": 2.0}
TARGET_P95_RATIO = 2.0
TARGET_LAG_MS = 50.0


@dataclass
class Row:
    model: str
    mode: str
    concurrency: int
    tweets: int
    seconds: float
    latencies: list[float]
    new_tokens: int
    lag_max: float | None = None
    lag_p99: float | None = None

    @property
    def tweets_per_s(self) -> float:
        return self.tweets / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tweets * self.new_tokens / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_model(models_dir: Path, size: str, new_tokens: int) -> str:
    """Publish a model of ``size`` into the store; its tokenizer covers the whole vocab."""
    if size == "tiny":
        model = build_tiny_model(build_tiny_tokenizer(support.CORPUS, vocab_size=2048), seed=0)
    else:
        model = support.gpt2_small()
    name = size.replace("-", "_")
    support.publish_serving_model(models_dir, name, new_tokens, model=model, base_label=size)
    return name


def run_pipeline(
    models_dir: Path, name: str, size: str, requests: int, device: str, dtype_choice: str
) -> Row:
    """huggingtweets: one pipeline call per request, sequentially (same device and dtype)."""
    dtype = dtype_for(resolve_device(device), dtype_choice)
    generator = pipeline(
        "text-generation", model=str(models_dir / name), device=device, dtype=dtype
    )
    generator(PROMPTS[0], num_return_sequences=1)  # warm-up
    latencies = []
    started = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        generator(PROMPTS[i % len(PROMPTS)] or EOS, num_return_sequences=1)
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    new_tokens = generator.model.generation_config.max_new_tokens
    return Row(size, "pipeline (sequential)", 1, requests, seconds, latencies, new_tokens)


async def run_engine(
    engine: GenerationEngine, name: str, size: str, concurrency: int, requests: int, new_tokens: int
) -> Row:
    """``concurrency`` clients share ``requests`` requests, each sending the next on reply."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            due = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - due)

    latencies: list[float] = []
    remaining = iter(range(requests))

    async def client() -> None:
        for i in remaining:
            t0 = time.perf_counter()
            result = await engine.generate(name, PROMPTS[i % len(PROMPTS)])
            latencies.append(time.perf_counter() - t0)
            assert len(result.tweets) == 1

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    stop.set()
    await ticking
    lags.sort()
    return Row(
        size,
        "engine",
        concurrency,
        requests,
        seconds,
        latencies,
        new_tokens,
        lag_max=lags[-1],
        lag_p99=lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))],
    )


def bench_size(args: argparse.Namespace, models_dir: Path, size: str) -> list[Row]:
    name = build_model(models_dir, size, args.new_tokens)
    requests = args.requests[size]
    rows = [run_pipeline(models_dir, name, size, requests, args.device, args.dtype)]
    settings = Settings(
        storage={"models_dir": str(models_dir)},
        generation={
            "device": args.device,
            "max_batch_size": args.batch_size,
            "batch_window_ms": args.window_ms,
            "max_queue": 1000,
            "max_new_tokens": args.new_tokens,
            "request_timeout_seconds": 3600,
            "dtype": args.dtype,
            "quantize": args.quantize,
        },
    )
    with GenerationEngine(settings) as engine:
        engine.generate_sync(name, PROMPTS[0])  # load and warm up
        for concurrency in CONCURRENCY:
            count = max(requests, concurrency * 2)
            rows.append(
                asyncio.run(run_engine(engine, name, size, concurrency, count, args.new_tokens))
            )
    return rows


def report(rows: list[Row]) -> bool:
    header = (
        "| model | mode | clients | tweets/s | tokens/s | p50 ms | p95 ms | loop lag max/p99 ms "
        "| vs pipeline |"
    )
    print(header)
    print("|" + "---|" * 9)
    baseline = {r.model: r for r in rows if r.mode.startswith("pipeline")}
    for r in rows:
        lag = "-" if r.lag_max is None else f"{r.lag_max * 1000:.1f} / {r.lag_p99 * 1000:.1f}"
        ratio = r.tweets_per_s / baseline[r.model].tweets_per_s
        print(
            f"| {r.model} | {r.mode} | {r.concurrency} | {r.tweets_per_s:.1f} | "
            f"{r.tokens_per_s:.0f} | {r.pct(0.5) * 1000:.0f} | {r.pct(0.95) * 1000:.0f} | "
            f"{lag} | {ratio:.2f}x |"
        )
    print()
    all_met = True
    for model, base in baseline.items():
        engine = {r.concurrency: r for r in rows if r.model == model and r.mode == "engine"}
        top, single = engine[max(CONCURRENCY)], engine[1]
        checks = [
            (
                f"{model}: throughput at {top.concurrency} clients >= "
                f"{TARGET_SPEEDUP[model]:g}x pipeline",
                top.tweets_per_s / base.tweets_per_s,
                TARGET_SPEEDUP[model],
                True,
            ),
            (
                f"{model}: p95 latency at {top.concurrency} clients <= "
                f"{TARGET_P95_RATIO:g}x single-request p50",
                top.pct(0.95) / single.pct(0.5),
                TARGET_P95_RATIO,
                False,
            ),
            (
                f"{model}: event-loop lag (max over all loads) < {TARGET_LAG_MS:g} ms",
                max(r.lag_max or 0 for r in engine.values()) * 1000,
                TARGET_LAG_MS,
                False,
            ),
        ]
        for label, value, target, higher_is_better in checks:
            met = value >= target if higher_is_better else value < target
            all_met &= met
            print(f"{'MET   ' if met else 'MISSED'} {label}: {value:.2f}")
    return all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--sizes", default="tiny,gpt2-small", help="comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="generation.dtype for both sides (auto: fp32 on CPU)",
    )
    parser.add_argument(
        "--quantize",
        default="auto",
        choices=["auto", "none", "int8"],
        help="generation.quantize for the engine (auto: int8 on a CPU serving fp32); the "
        "pipeline has no int8 and stays in the dtype",
    )
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads, both sides (default 1: on a small shared CPU, more "
        "threads stall on each other at every op; 0 keeps torch's default)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.requests = {"tiny": 16, "gpt2-small": 8} if args.quick else {"tiny": 64, "gpt2-small": 32}
    support.quiet_transformers()
    print(
        f"device {args.device}, dtype {args.dtype}, engine quantize {args.quantize}, "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, "
        f"{args.new_tokens} new tokens per tweet, batch <= {args.batch_size}, "
        f"window {args.window_ms:g} ms\n"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        for size in args.sizes.split(","):
            rows += bench_size(args, Path(tmp), size)
    return 0 if report(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
