"""Serving while training: one request's latency with the host idle and while a training
runs beside the engine, and what serving costs the training, for old and new settings.

The training is the real thing the bot starts: ``python -m bot train sample --progress
json`` through ``bot.jobs.runner`` (so with the priority and thread budget the settings
give it), fine-tuning a local base folder of GPT-2 small's shape at random init (87M
parameters: GPT-2 small with a 2,048-token vocabulary) on the bundled sample account for
one epoch. The engine serves a GPT-2-small-shaped model (124M, full vocabulary) in this
process; every request is one tweet of exactly ``--new-tokens`` tokens, sent one after
another by a single client.

Each variant runs three phases: requests with nothing else running (idle), the training
alone (its ``train`` stage timed from the progress stream), and the training again while the
client sends a request ``--pause`` seconds (1 by default) after each answer, all along (only
requests wholly inside the ``train`` stage count as "during"). Back to back (``--pause 0``)
the engine never leaves a core idle, and a niced training then gets almost nothing. Variants:

- ``old``: how the bot ran trainings before: same priority as the bot, torch's default
  threads (every core) in both processes;
- ``new``: the defaults of ``training.nice``, ``training.threads`` and
  ``generation.threads``;
- ``nice=N,train=T,serve=S``: anything else (``train``/``serve`` = 0: every core).

    .venv/bin/python bench/serving_while_training.py            # old and new
    .venv/bin/python bench/serving_while_training.py --quick    # a smaller base, fewer requests
    .venv/bin/python bench/serving_while_training.py --variants old,nice=19,train=1,serve=1
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

from bot.config import Settings
from bot.cpu_share import autogroup_nice, available_cores, niceness, training_threads
from bot.generation.engine import GenerationEngine
from bot.jobs.runner import TrainingProcess, child_environment, training_command
from bot.training.progress import DoneEvent, ErrorEvent, ProgressEvent

SERVED = "serve"
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Variant:
    label: str
    nice: int
    train_threads: int | None  # None: the settings' own rule
    serve_threads: int | None  # None: torch's default


@dataclass
class TrainingRun:
    train_seconds: float
    total_seconds: float
    child_nice: int
    child_autogroup_nice: int | None
    latencies: list[float]


@dataclass
class Result:
    variant: Variant
    train_threads: int
    serve_threads: int
    idle: list[float]
    alone: TrainingRun
    serving: TrainingRun

    @property
    def ratio(self) -> float:
        return support.percentile(self.serving.latencies, 0.5) / support.percentile(self.idle, 0.5)

    @property
    def slowdown(self) -> float:
        return self.serving.train_seconds / self.alone.train_seconds


def parse_variant(text: str, cores: int) -> Variant:
    if text == "old":
        return Variant("old", nice=0, train_threads=cores, serve_threads=cores)
    defaults = Settings()
    if text == "new":
        return Variant(
            "new",
            nice=defaults.training.nice,
            train_threads=defaults.training.threads,
            serve_threads=defaults.generation.threads,
        )
    values = dict(part.split("=", 1) for part in text.split(","))
    return Variant(
        text,
        nice=int(values.get("nice", defaults.training.nice)),
        train_threads=int(values["train"]) or cores if "train" in values else None,
        serve_threads=int(values["serve"]) or cores if "serve" in values else None,
    )


def settings_for(root: Path, base: Path, variant: Variant, device: str) -> Settings:
    return Settings(
        storage={
            "models_dir": str(root / "models"),
            "data_dir": str(root / "data"),
            "database_url": f"sqlite:///{root / 'tweetlike.sqlite'}",
            "keep_versions": 1,
        },
        training={
            "base_model": str(base),
            "epochs": 1,
            "nice": variant.nice,
            "threads": variant.train_threads,
        },
        generation={
            "device": device,
            "threads": variant.serve_threads,
            "max_queue": 1000,
            "request_timeout_seconds": 3600,
        },
    )


async def one_request(engine: GenerationEngine, i: int) -> float:
    started = time.perf_counter()
    await engine.generate(SERVED, support.PROMPTS[i % len(support.PROMPTS)])
    return time.perf_counter() - started


async def idle_latencies(engine: GenerationEngine, requests: int) -> list[float]:
    return [await one_request(engine, i) for i in range(requests)]


async def train(
    settings: Settings, engine: GenerationEngine | None, pause: float = 0.0
) -> TrainingRun:
    """One training subprocess; with ``engine``, a client sends requests all along, each
    ``pause`` seconds after the last answer."""
    started = time.perf_counter()
    process = await TrainingProcess.start(
        training_command([support.SAMPLE_HANDLE], fetch=False),
        child_environment(settings),
        nice=settings.training.nice,
    )
    child_nice, child_group = niceness(process.pid), autogroup_nice(process.pid)
    stage: dict[str, float] = {}
    timed: list[tuple[float, float]] = []
    finished = asyncio.Event()

    async def client() -> None:
        i = 0
        while not finished.is_set():
            begun = time.perf_counter()
            timed.append((begun, begun + await one_request(engine, i)))
            i += 1
            await asyncio.sleep(pause)

    clients = [asyncio.create_task(client())] if engine is not None else []
    error: str | None = None
    async for event in process.events():
        if isinstance(event, ProgressEvent) and event.stage not in stage:
            stage[event.stage] = time.perf_counter()
        elif isinstance(event, ErrorEvent):
            error = event.message
        elif isinstance(event, DoneEvent):
            break
    code = await process.wait()
    finished.set()
    await asyncio.gather(*clients)
    if error is not None or code != 0 or "train" not in stage or "publish" not in stage:
        raise SystemExit(f"training failed ({code}): {error or process.failure_reason(code)}")
    begin, end = stage["train"], stage["publish"]
    return TrainingRun(
        train_seconds=end - begin,
        total_seconds=time.perf_counter() - started,
        child_nice=child_nice,
        child_autogroup_nice=child_group,
        latencies=[b - a for a, b in timed if a >= begin and b <= end],
    )


async def run_variant(
    root: Path, base: Path, variant: Variant, args: argparse.Namespace, cores: int
) -> Result:
    settings = settings_for(root, base, variant, args.device)
    serve_threads = variant.serve_threads or cores
    # As the bot does before its engine starts; the worker thread takes this count.
    torch.set_num_threads(serve_threads)
    engine = GenerationEngine(settings)
    engine.start()
    try:
        await one_request(engine, 0)  # load and warm up
        idle = await idle_latencies(engine, args.requests)
        alone = await train(settings, None)
        serving = await train(settings, engine, args.pause)
    finally:
        await asyncio.to_thread(engine.close)
    return Result(variant, training_threads(settings, cores), serve_threads, idle, alone, serving)


def report(results: list[Result]) -> bool:
    rows = []
    for r in results:
        group = "-" if r.serving.child_autogroup_nice is None else r.serving.child_autogroup_nice
        rows.append(
            [
                r.variant.label,
                f"{r.serving.child_nice} / {group}",
                r.train_threads,
                r.serve_threads,
                f"{support.percentile(r.idle, 0.5) * 1000:.0f}",
                f"{support.percentile(r.serving.latencies, 0.5) * 1000:.0f}",
                f"{support.percentile(r.serving.latencies, 0.95) * 1000:.0f}",
                len(r.serving.latencies),
                f"{r.ratio:.2f}x",
                f"{r.alone.train_seconds:.1f}",
                f"{r.serving.train_seconds:.1f}",
                f"{r.slowdown:.2f}x",
            ]
        )
    headers = [
        "settings",
        "child nice / autogroup",
        "train threads",
        "serve threads",
        "idle p50 ms",
        "during p50 ms",
        "during p95 ms",
        "requests during",
        "latency during / idle",
        "train s alone",
        "train s serving",
        "training slowdown",
    ]
    print(support.table(headers, rows))
    print()
    all_met = True
    for r in results:
        met = r.ratio <= TARGET_RATIO
        all_met &= met or r.variant.label == "old"
        print(
            support.verdict(
                met,
                f"{r.variant.label}: p50 latency during a training <= {TARGET_RATIO:g}x idle: "
                f"{r.ratio:.2f}",
            )
        )
    return all_met


async def main_async(args: argparse.Namespace) -> int:
    cores = available_cores()
    variants = [parse_variant(v, cores) for v in args.variants.split(";")]
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        root = Path(tmp)
        models = root / "models"
        models.mkdir()
        support.publish_serving_model(models, SERVED, args.new_tokens)
        base = support.save_base_folder(root / "base", vocab_size=2048, layers=args.layers)
        support.import_sample(settings_for(root, base, variants[0], args.device))
        results = []
        for variant in variants:
            print(f"running {variant.label} ...", file=sys.stderr, flush=True)
            result = await run_variant(root, base, variant, args, cores)
            print(
                f"  latency during / idle {result.ratio:.2f}x, training slowdown "
                f"{result.slowdown:.2f}x ({result.alone.train_seconds:.0f} s alone)",
                file=sys.stderr,
                flush=True,
            )
            results.append(result)
    print()
    return 0 if report(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-layer base, 3 idle requests")
    parser.add_argument(
        "--variants",
        default="old;new",
        help="';'-separated: old, new or nice=N,train=T,serve=S (default: old;new)",
    )
    parser.add_argument("--requests", type=int, default=8, help="idle requests per variant")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="seconds between an answer and the client's next request during the training "
        "(0: back to back, which leaves a niced training almost nothing)",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda or cuda:N: the engine's and the training's"
    )
    args = parser.parse_args()
    args.layers = 2 if args.quick else 12
    if args.quick:
        args.requests = 3
    support.quiet_transformers()
    print(
        f"{support.machine(args.device)}; one request = 1 tweet of {args.new_tokens} tokens from a "
        f"GPT-2-small-shaped model; training = 1 epoch of the sample account on a "
        f"{args.layers}-layer GPT-2-small-shaped base\n"
    )
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
