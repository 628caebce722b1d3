"""What a request costs on the Ray path (``generation.backend = "ray"``) beyond the local engine.

The same engine answers the same requests twice: in this process (``local``), and in one Ray
Serve replica reached through a deployment handle (``ray``). Requests go one at a time, so
each latency is one request's trip with nothing queued, and the two paths take turns
request by request, so that a busy host slows both alike. The added cost is the median of
the differences between each Ray request and the local one just before it (target: under
20 ms at p50); the medians of the two paths are shown as well.

Both sides run torch on one thread (the replica takes ``ray.cpus_per_replica = 1``) on the
same published models: ``tiny`` (bot.training.tiny) and a randomly initialised GPT-2-small
shape (``GPT2Config()``, 124M parameters), each writing exactly ``--new-tokens`` tokens,
and a request for an unpublished name, which the engine refuses at once: the trip alone.
Unless ``--address`` names a cluster, a private one is started in this process, on
loopback only.

    .venv/bin/python bench/ray_overhead.py
    .venv/bin/python bench/ray_overhead.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A private cluster for this run: on loopback, without a token to manage.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch
from generation import build_model
from support import machine, percentile, quiet_transformers, table, verdict

from bot.config import Settings
from bot.errors import ModelNotFoundError
from bot.generation.engine import GenerationEngine
from bot.generation.ray_backend import RayGenerator

TARGET_ADDED_P50_MS = 20.0
# A name with no model: the engine refuses it at once, so its row is the trip alone.
REFUSED = "nobody"
PROMPTS = ["My dream is", "Today I learned", "Hot take:", "The best thing about"]


def settings_for(models_dir: Path, backend: str, args: argparse.Namespace) -> Settings:
    return Settings(
        storage={"models_dir": str(models_dir)},
        generation={"device": "cpu", "backend": backend, "novelty_guard": False},
        ray={"address": args.address, "app_name": "tweetlike-bench", "cpus_per_replica": 1},
    )


def timed(generate: Callable[[str, str], object], model: str, prompt: str) -> float:
    """Milliseconds for one request (a refusal of the unpublished ``REFUSED`` included)."""
    start = time.perf_counter()
    try:
        generate(model, prompt)
    except ModelNotFoundError:
        if model != REFUSED:
            raise
    return (time.perf_counter() - start) * 1000


def bench(args: argparse.Namespace, models_dir: Path, sizes: list[str]) -> list[list[object]]:
    rows: list[list[object]] = []
    with (
        GenerationEngine(settings_for(models_dir, "local", args)) as local,
        RayGenerator(settings_for(models_dir, "ray", args)) as remote,
    ):
        paths = {
            "local": lambda m, p: local.generate_sync(m, p),
            "ray": lambda m, p: remote.generate_sync(m, p),
        }
        cases = [(REFUSED, args.requests["tiny"])] + [(size, args.requests[size]) for size in sizes]
        for case, count in cases:
            model = case.replace("-", "_")
            for generate in paths.values():  # load the model on both sides
                for prompt in PROMPTS:
                    timed(generate, model, prompt)
            latencies: dict[str, list[float]] = {"local": [], "ray": []}
            for n in range(count):
                for path, generate in paths.items():
                    latencies[path].append(timed(generate, model, PROMPTS[n % len(PROMPTS)]))
            pairs = zip(latencies["local"], latencies["ray"], strict=True)
            added = [ray_ms - local_ms for local_ms, ray_ms in pairs]
            for path, values in latencies.items():
                rows.append(
                    [
                        "none: a refused request" if case == REFUSED else case,
                        path,
                        len(values),
                        f"{percentile(values, 0.5):.1f}",
                        f"{percentile(values, 0.95):.1f}",
                        "" if path == "local" else f"{percentile(added, 0.5):+.1f}",
                    ]
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--sizes", default="tiny,gpt2-small", help="comma-separated")
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument(
        "--address", default="", help="ray.address of a running cluster (default: start one)"
    )
    args = parser.parse_args()
    quick = {"tiny": 60, "gpt2-small": 20}
    args.requests = quick if args.quick else {size: 5 * n for size, n in quick.items()}
    torch.set_num_threads(1)
    quiet_transformers()
    sizes = args.sizes.split(",")
    print(machine())
    print(f"{args.new_tokens} new tokens per tweet, one request at a time, 1 torch thread\n")
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        models_dir = Path(tmp) / "models"
        for size in sizes:
            build_model(models_dir, size, args.new_tokens)
        rows = bench(args, models_dir, sizes)
    headers = ["model", "path", "requests", "p50 ms", "p95 ms", "added ms (p50 of pairs)"]
    print(table(headers, rows))
    added = [float(row[5]) for row in rows if row[1] == "ray"]
    met = all(value < TARGET_ADDED_P50_MS for value in added)
    print()
    print(verdict(met, f"the Ray path adds under {TARGET_ADDED_P50_MS:g} ms at p50"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
