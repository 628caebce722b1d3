"""Open-loop latency: requests arrive at random, as members type them, at 70% of capacity.

A closed-loop client waits for its answer before asking again, so a slow engine slows its
own load down and looks better than it is. Here requests arrive as a Poisson process (the
gaps between arrivals are exponential) whatever the engine is doing, and each one's latency
is from its arrival to its answer. In one run, on one GPT-2-small-shaped model (124M, full
vocabulary, random init), every request one tweet of exactly ``--new-tokens`` tokens:

1. single-request latency: requests one at a time, nothing else running;
2. capacity: ``--clients`` closed-loop clients (twice the batch size by default) keep the
   engine saturated; requests answered per second;
3. the open loop: Poisson arrivals at ``--load`` (0.7) times that capacity for
   ``--seconds`` (60), then every answer awaited.

Target: p95 latency of the open loop <= 1.5x the single-request p50.

    .venv/bin/python bench/open_loop.py            # 60 s of open loop
    .venv/bin/python bench/open_loop.py --quick    # 15 s, fewer single requests
    .venv/bin/python bench/open_loop.py --quantize none   # fp32 weights
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import support
import torch

from bot.config import Settings
from bot.errors import EngineBusyError
from bot.generation import batch
from bot.generation.engine import GenerationEngine

SERVED = "open"
TARGET_P95_RATIO = 1.5


async def timed(engine: GenerationEngine, i: int) -> float:
    started = time.perf_counter()
    await engine.generate(SERVED, support.PROMPTS[i % len(support.PROMPTS)])
    return time.perf_counter() - started


async def single_requests(engine: GenerationEngine, count: int) -> list[float]:
    return [await timed(engine, i) for i in range(count)]


async def capacity(engine: GenerationEngine, clients: int, seconds: float) -> float:
    """Requests per second with ``clients`` clients asking back to back for ``seconds``."""
    deadline = time.perf_counter() + seconds
    answered = 0

    async def client(offset: int) -> None:
        nonlocal answered
        i = offset
        while time.perf_counter() < deadline:
            await timed(engine, i)
            answered += 1
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return answered / (time.perf_counter() - started)


async def open_loop(
    engine: GenerationEngine, rate: float, seconds: float, seed: int
) -> tuple[list[float], int, float]:
    """Poisson arrivals at ``rate`` per second for ``seconds``: latencies, busy answers and
    the time until the last answer."""
    rng = random.Random(seed)
    latencies: list[float] = []
    busy = 0

    async def request(i: int) -> None:
        nonlocal busy
        try:
            latencies.append(await timed(engine, i))
        except EngineBusyError:
            busy += 1

    tasks = []
    started = time.perf_counter()
    arrival = started
    i = 0
    while True:
        arrival += rng.expovariate(rate)
        if arrival - started > seconds:
            break
        await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
        tasks.append(asyncio.create_task(request(i)))
        i += 1
    await asyncio.gather(*tasks)
    return latencies, busy, time.perf_counter() - started


def latency_floor(
    single_p50: float, per_second: float, load: float, batch_size: int, new_tokens: int
) -> tuple[float, float]:
    """The mean batch and the latency, as a multiple of a single request's, that any engine
    with this machine's step cost would give at ``load``: (rows, ratio).

    A step is modelled as ``a + b * rows`` seconds, fitted to the two points measured: one
    row (the single request, prefill included, spread over its tokens) and a full batch
    (capacity, with more clients than rows). At a throughput of ``T`` tokens a second the
    batch holds ``n = T * a / (1 - T * b)`` rows, and a request's tokens take ``a + b * n``
    each. Arrival bursts and the prefill passes of joining rows come on top, so this is a
    floor for the median, not a prediction of the tail.
    """
    one_row = single_p50 / new_tokens
    full = batch_size / (per_second * new_tokens)
    per_row = (full - one_row) / (batch_size - 1)
    fixed = one_row - per_row
    tokens_per_second = load * per_second * new_tokens
    rows = tokens_per_second * fixed / (1 - tokens_per_second * per_row)
    return rows, (fixed + per_row * rows) / one_row


async def bench(args: argparse.Namespace, root: Path) -> bool:
    support.publish_serving_model(root, SERVED, args.new_tokens)
    settings = Settings(
        storage={"models_dir": str(root)},
        generation={
            "device": args.device,
            "dtype": args.dtype,
            "quantize": args.quantize,
            "max_batch_size": args.batch_size,
            "max_queue": 10_000,
            "max_new_tokens": args.new_tokens,
            "request_timeout_seconds": 3600,
        },
    )
    engine = GenerationEngine(settings)
    engine.start()
    try:
        await timed(engine, 0)  # load and warm up
        print("single requests ...", file=sys.stderr, flush=True)
        single = await single_requests(engine, args.single)
        print("capacity ...", file=sys.stderr, flush=True)
        per_second = await capacity(engine, args.clients, args.capacity_seconds)
        rate = args.load * per_second
        print(f"open loop at {rate:.2f} requests/s ...", file=sys.stderr, flush=True)
        latencies, busy, elapsed = await open_loop(engine, rate, args.seconds, args.seed)
    finally:
        await asyncio.to_thread(engine.close)

    single_p50 = support.percentile(single, 0.5)
    rows = [
        [
            "single requests, one at a time",
            "-",
            len(single),
            *(f"{support.percentile(single, q) * 1000:.0f}" for q in (0.5, 0.95, 0.99)),
            "1.00x",
        ],
        [
            f"open loop, Poisson at {args.load:g} x capacity",
            f"{rate:.2f}",
            len(latencies),
            *(f"{support.percentile(latencies, q) * 1000:.0f}" for q in (0.5, 0.95, 0.99)),
            f"{support.percentile(latencies, 0.95) / single_p50:.2f}x",
        ],
    ]
    headers = ["load", "requests/s", "requests", "p50 ms", "p95 ms", "p99 ms", "p95 / single p50"]
    print(
        f"capacity: {per_second:.2f} requests/s ({per_second * args.new_tokens:.0f} tokens/s) "
        f"with {args.clients} closed-loop clients; open loop served "
        f"{len(latencies) / elapsed:.2f} requests/s, {busy} answered busy\n"
    )
    print(support.table(headers, rows))
    print()
    mean_rows, floor = latency_floor(
        single_p50, per_second, args.load, args.batch_size, args.new_tokens
    )
    print(
        f"floor for any engine with this step cost at {args.load:g} x capacity: "
        f"{mean_rows:.1f} rows in the batch on average, each request {floor:.2f}x the single "
        "request at the median, before arrival bursts and prefills\n"
    )
    ratio = support.percentile(latencies, 0.95) / single_p50
    met = ratio <= TARGET_P95_RATIO and busy == 0
    print(
        support.verdict(
            met,
            f"open-loop p95 <= {TARGET_P95_RATIO:g}x single-request p50 (none busy): {ratio:.2f}",
        )
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s of open loop")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the open loop")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of capacity")
    parser.add_argument("--single", type=int, default=10, help="single requests timed")
    parser.add_argument("--capacity-seconds", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--clients", type=int, default=None, help="default: 2x batch size")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument(
        "--join-after-steps",
        type=int,
        default=batch.JOIN_AFTER_STEPS,
        help="steps a row arriving at a running batch may be held (0: join at the next step)",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.single, args.capacity_seconds = 15.0, 4, 10.0
    args.clients = args.clients or 2 * args.batch_size
    batch.JOIN_AFTER_STEPS = args.join_after_steps
    if args.threads:
        torch.set_num_threads(args.threads)
    support.quiet_transformers()
    print(
        f"{support.machine(args.device)}; {torch.get_num_threads()} threads, dtype {args.dtype}, "
        f"quantize {args.quantize}, join after {args.join_after_steps} steps, "
        f"1 tweet of {args.new_tokens} tokens per request, batch <= {args.batch_size}\n"
    )
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        met = asyncio.run(bench(args, Path(tmp)))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
