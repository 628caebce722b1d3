"""tweetlike against the engines people would pick instead, on one model, in one run.

Contestants, all on the same GPT-2-small-shaped model (124M parameters, full 50,257-token
vocabulary, random init: see ``support.py``), the same 16 prompts, exactly ``--new-tokens``
new tokens per tweet, top-k 50 / top-p 0.95 sampling and the same number of threads:

- the transformers pipeline called once per prompt, one call after another (huggingtweets);
- the tweetlike engine with 16 concurrent ``generate()`` calls, with its default settings
  (the row the target is judged on) and with the other ``generation.quantize`` choice (float
  weights where the default is int8, and the reverse);
- CTranslate2's ``Generator.generate_batch`` of all 16 prompts, on a conversion of the same
  folder (``TransformersConverter``) loaded in float32 and int8 (float16/bfloat16 and
  int8_float16 on CUDA).

Rounds are interleaved (every contestant once per round, in turn) so a slow spell of a shared
machine falls on all of them alike; tokens/s is total new tokens over total time. Each
tweetlike engine is started (and warmed up) before its turn and closed after it, untimed,
so that only one engine's torch threads are alive while one is timed, as in the bot (see
``support.py``); each CTranslate2 contestant runs in a child process of its own, whose
thread pool would otherwise slow the engine beside it (``ct2_child``).
CTranslate2 is needed only here: ``pip install -e ".[bench]"``.

    .venv/bin/python bench/peers.py             # 3 rounds
    .venv/bin/python bench/peers.py --quick     # 1 round
    .venv/bin/python bench/peers.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.process
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import support
import torch
from transformers import AutoTokenizer

from bot.config import Settings
from bot.cpu_share import available_cores
from bot.generation.device import dtype_for, resolve_device, use_int8
from bot.generation.engine import GenerationEngine
from bot.training.tiny import EOS

SERVED = "peer"
TOP_K, TOP_P = support.TOP_K, support.TOP_P


@dataclass
class Contestant:
    label: str
    # Runs the prompts; returns the new tokens made and the seconds that took.
    run: Callable[[list[str]], Awaitable[tuple[int, float]]]
    tokens: int = 0
    seconds: float = 0.0
    default: bool = False  # the tweetlike row the target is judged on
    rounds: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def pipeline_contestant(
    folder: Path, device: str, dtype: torch.dtype, new_tokens: int
) -> Contestant:
    generate = support.huggingtweets_pipeline(folder, device, dtype)

    async def run(prompts: list[str]) -> tuple[int, float]:
        started = time.perf_counter()
        for prompt in prompts:
            generate(prompt)
        return len(prompts) * new_tokens, time.perf_counter() - started

    return Contestant("transformers pipeline, one call after another (huggingtweets)", run)


def serves_int8(settings: Settings) -> bool:
    """Whether an engine with ``settings`` serves int8 weights, decided as the engine does."""
    device = resolve_device(settings.generation.device)
    dtype = dtype_for(device, settings.generation.dtype)
    return use_int8(settings.generation.quantize, device, dtype)


def engine_contestant(
    label: str, settings: Settings, new_tokens: int, *, default: bool
) -> Contestant:
    label += ", int8 weights" if serves_int8(settings) else ", float weights"

    async def run(prompts: list[str]) -> tuple[int, float]:
        with GenerationEngine(settings) as engine:
            engine.generate_sync(SERVED, "warm up")
            started = time.perf_counter()
            results = await asyncio.gather(*(engine.generate(SERVED, p) for p in prompts))
            elapsed = time.perf_counter() - started
        return sum(len(r.tweets) for r in results) * new_tokens, elapsed

    return Contestant(label, run, default=default)


@dataclass(frozen=True)
class Ct2Setup:
    """What a CTranslate2 child needs to load its generator and run rounds."""

    model: str  # the converted folder
    tokenizer: str  # the served folder
    device: str
    device_index: int
    compute_type: str
    threads: int
    new_tokens: int


def ct2_child(setup: Ct2Setup, conn: Connection) -> None:
    """Serve rounds in a process of its own: prompts in, (tokens, seconds) out, None ends.

    CTranslate2's thread pool, once a generator exists, stays alive in the process for good
    (deleting the generator does not end it) and slowed the tweetlike engine beside it from
    0.9 s to 1.4-1.6 s a round; a bot would never have both in one process.
    """
    import ctranslate2

    tokenizer = AutoTokenizer.from_pretrained(setup.tokenizer)
    generator = ctranslate2.Generator(
        setup.model,
        device=setup.device,
        device_index=setup.device_index,
        compute_type=setup.compute_type,
        intra_threads=setup.threads,
    )
    conn.send("ready")
    while (prompts := conn.recv()) is not None:
        started = time.perf_counter()
        start = [tokenizer.convert_ids_to_tokens(tokenizer.encode(EOS + p)) for p in prompts]
        results = generator.generate_batch(
            start,
            max_length=setup.new_tokens,
            min_length=setup.new_tokens,
            sampling_topk=TOP_K,
            sampling_topp=TOP_P,
            include_prompt_in_result=False,
        )
        tokens = sum(len(r.sequences_ids[0]) for r in results)
        conn.send((tokens, time.perf_counter() - started))


def ctranslate2_contestants(
    folder: Path,
    root: Path,
    args: argparse.Namespace,
    dtype: torch.dtype,
    children: list[multiprocessing.process.BaseProcess],
) -> list[Contestant]:
    """One contestant per compute type, each served by a child process (``ct2_child``)
    that is started here and appended to ``children``."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    # The converter loads the model with torch: on a thread of its own, like every baseline.
    converted = support.on_own_thread(
        lambda: TransformersConverter(str(folder)).convert(str(root / "ct2"), force=True)
    )
    device = args.device
    if device == "cpu":
        compute_types = ["float32", "int8"]
    else:
        half = "bfloat16" if dtype is torch.bfloat16 else "float16"
        compute_types = [half, f"int8_{half}"]
    spawn = multiprocessing.get_context("spawn")
    contestants = []
    for compute_type in compute_types:
        setup = Ct2Setup(
            model=converted,
            tokenizer=str(folder),
            device="cuda" if device.startswith("cuda") else device,
            device_index=int(device.split(":")[1]) if ":" in device else 0,
            compute_type=compute_type,
            threads=args.threads,
            new_tokens=args.new_tokens,
        )
        ours, theirs = spawn.Pipe()
        child = spawn.Process(target=ct2_child, args=(setup, theirs), daemon=True)
        child.start()
        children.append(child)
        if ours.recv() != "ready":  # loaded before any round, so no round pays for it
            raise RuntimeError(f"the CTranslate2 {compute_type} process did not start")

        async def run(prompts: list[str], conn: Connection = ours) -> tuple[int, float]:
            conn.send(prompts)
            return await asyncio.to_thread(conn.recv)

        label = f"CTranslate2 {ctranslate2.__version__}, generate_batch, {compute_type}"
        contestants.append(Contestant(label, run))
    return contestants


def engine_settings(root: Path, args: argparse.Namespace, quantize: str | None) -> Settings:
    generation = {
        "device": args.device,
        "dtype": args.dtype,
        "max_batch_size": args.concurrency,
        "max_queue": 1000,
        "max_new_tokens": args.new_tokens,
        "request_timeout_seconds": 3600,
    }
    if quantize is not None:
        generation["quantize"] = quantize
    return Settings(storage={"models_dir": str(root / "models")}, generation=generation)


def other_quantize(device: str, default_quantized: bool) -> str | None:
    """The ``generation.quantize`` value that the default did not pick, where there is one."""
    if device != "cpu":
        return None
    return "none" if default_quantized else "int8"


async def bench(args: argparse.Namespace, root: Path) -> list[Contestant]:
    folder = support.publish_serving_model(root / "models", SERVED, args.new_tokens)
    dtype = dtype_for(resolve_device(args.device), args.dtype)
    contestants = [pipeline_contestant(folder, args.device, dtype, args.new_tokens)]
    default_settings = engine_settings(root, args, None)
    contestants.append(
        engine_contestant(
            "tweetlike engine, 16 concurrent generate(), default settings",
            default_settings,
            args.new_tokens,
            default=True,
        )
    )
    other = other_quantize(args.device, serves_int8(default_settings))
    if other is not None:
        contestants.append(
            engine_contestant(
                f"tweetlike engine, 16 concurrent generate(), quantize = {other}",
                engine_settings(root, args, other),
                args.new_tokens,
                default=False,
            )
        )
    children: list[multiprocessing.process.BaseProcess] = []
    try:
        contestants += ctranslate2_contestants(folder, root, args, dtype, children)
        prompts = support.PROMPTS[: args.concurrency]
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for contestant in contestants:
                tokens, elapsed = await contestant.run(prompts)
                contestant.tokens += tokens
                contestant.seconds += elapsed
                contestant.rounds.append(elapsed)
    finally:
        for child in children:
            child.terminate()
            child.join()
    return contestants


def report(contestants: list[Contestant]) -> bool:
    pipeline_row = contestants[0]
    int8 = [c for c in contestants if c.label.startswith("CTranslate2") and "int8" in c.label]
    rows = [
        [
            c.label,
            f"{c.tokens_per_s:.0f}",
            f"{c.tokens_per_s / pipeline_row.tokens_per_s:.1f}x",
            f"{c.tokens_per_s / int8[0].tokens_per_s:.2f}x" if int8 else "-",
            " / ".join(f"{s:.1f}" for s in c.rounds),
        ]
        for c in contestants
    ]
    headers = ["engine", "tokens/s", "vs pipeline", "vs CTranslate2 int8", "s per round"]
    print(support.table(headers, rows))
    print()
    default = next(c for c in contestants if c.default)
    if not int8:
        return True
    ratio = default.tokens_per_s / int8[0].tokens_per_s
    print(support.verdict(ratio >= 1, f"tweetlike >= CTranslate2 int8 tokens/s: {ratio:.2f}x"))
    return ratio >= 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="threads for every contestant (default: every core)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    torch.set_num_threads(args.threads)
    support.quiet_transformers()
    print(
        f"{support.machine(args.device)}; {args.threads} threads, dtype {args.dtype}, "
        f"{args.concurrency} prompts x {args.new_tokens} new tokens, top-k {TOP_K} / "
        f"top-p {TOP_P}, {args.rounds} interleaved rounds\n"
    )
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        contestants = asyncio.run(bench(args, Path(tmp)))
    return 0 if report(contestants) else 1


if __name__ == "__main__":
    sys.exit(main())
