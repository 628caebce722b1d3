"""A burst through Discord: 16 members ask ``/tweetlike`` at once, against the huggingtweets
pipeline answering the same 16 prompts one after another.

The Discord side is the whole product path: the real discord.py bot (``TweetlikeBot``), the
service core and the generation engine, talking over HTTP and a websocket to the fake
Discord the tests use (``tests/fakes``, on 127.0.0.1). Sixteen members each send one
``/tweetlike burst <prompt>`` in the same instant; the burst lasts from the first dispatch to
the last reply (the follow-up message holding the tweet). The pipeline side is
``transformers.pipeline("text-generation")`` on the same folder, one call per prompt, as
huggingtweets served it. Same GPT-2-small-shaped model (124M, full vocabulary, random init),
every tweet exactly ``--new-tokens`` tokens; rounds interleaved.

Target: the burst through Discord answers at least 8x the pipeline's tweets per second.

    .venv/bin/python bench/discord_burst.py            # 3 rounds
    .venv/bin/python bench/discord_burst.py --quick    # 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import support
import torch

sys.path.insert(0, str(support.REPO / "tests"))

from fakes.discord import FakeDiscord

from bot.adapters.discord_bot import TweetlikeBot
from bot.config import Settings
from bot.core.service import TweetlikeService
from bot.generation.device import dtype_for, resolve_device
from bot.generation.engine import GenerationEngine

HANDLE = "burst"
FIRST_MEMBER = 7000
TARGET_SPEEDUP = 8.0
ACK_DEADLINE_S = 3.0


@dataclass
class Burst:
    seconds: float
    reply_latencies: list[float]
    ack_latencies: list[float]


@dataclass
class World:
    fake: FakeDiscord
    channel_id: int
    members: list[int]


@contextlib.asynccontextmanager
async def discord_world(root: Path, args: argparse.Namespace, members: int) -> AsyncIterator[World]:
    """The fake Discord with one guild, ``members`` members, and the real bot logged in."""
    async with FakeDiscord() as fake:
        guild = fake.add_guild("Bench")
        channel = fake.add_channel(guild.id, "general")
        ids = [FIRST_MEMBER + i for i in range(members)]
        for user_id in ids:
            fake.add_member(user_id, f"member{user_id}")
        settings = Settings(
            storage={"models_dir": str(root)},
            discord={"api_base_url": fake.api_base_url, "guild_ids": [guild.id]},
            generation={
                "device": args.device,
                "dtype": args.dtype,
                "max_new_tokens": args.new_tokens,
                "request_timeout_seconds": 600,
            },
        )
        engine = GenerationEngine(settings)
        engine.start()
        engine.generate_sync(HANDLE, "warm up")
        bot = TweetlikeBot(settings, TweetlikeService(settings, engine))
        stop = asyncio.Event()

        async def serve() -> None:
            async with bot:
                await bot.log_in(fake.token)
                await bot.serve(stop, grace_seconds=60)

        serving = asyncio.create_task(serve())
        try:
            await fake.wait_until_ready()
            yield World(fake, channel.id, ids)
        finally:
            stop.set()
            await serving
            await asyncio.to_thread(engine.close)


async def burst(world: World, members: list[int], prompts: list[str]) -> Burst:
    started = time.perf_counter()
    interactions = [
        await world.fake.slash(
            "tweetlike",
            {"handle": HANDLE, "prompt": prompt},
            user_id=member,
            channel_id=world.channel_id,
        )
        for member, prompt in zip(members, prompts, strict=True)
    ]
    replies = await asyncio.gather(*(i.wait_for("followup", timeout=600) for i in interactions))
    seconds = time.perf_counter() - started
    for reply in replies:
        if not reply.data.get("embeds"):
            raise SystemExit(f"a reply held no tweet: {reply.data}")
    return Burst(
        seconds,
        [reply.after_s for reply in replies],
        [i.ack_latency for i in interactions if i.ack_latency is not None],
    )


async def bench(args: argparse.Namespace, root: Path) -> bool:
    folder = support.publish_serving_model(root, HANDLE, args.new_tokens)
    dtype = dtype_for(resolve_device(args.device), args.dtype)
    generate = support.huggingtweets_pipeline(folder, args.device, dtype)
    prompts = support.PROMPTS[: args.concurrency]
    pipeline_seconds = 0.0
    bursts: list[Burst] = []
    async with discord_world(root, args, args.concurrency * args.rounds) as world:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            for prompt in prompts:
                generate(prompt)
            pipeline_seconds += time.perf_counter() - started
            members = world.members[round_ * args.concurrency : (round_ + 1) * args.concurrency]
            bursts.append(await burst(world, members, prompts))
        failed = len(world.fake.failed_interactions)

    tweets = args.rounds * len(prompts)
    pipeline_rate = tweets / pipeline_seconds
    burst_rate = tweets / sum(b.seconds for b in bursts)
    replies = [latency for b in bursts for latency in b.reply_latencies]
    acks = [latency for b in bursts for latency in b.ack_latencies]
    rows = [
        [
            "transformers pipeline, one call after another (huggingtweets)",
            f"{pipeline_rate:.2f}",
            f"{pipeline_rate * args.new_tokens:.0f}",
            "-",
            "-",
            "1.0x",
        ],
        [
            f"tweetlike through Discord, {len(prompts)} members at once",
            f"{burst_rate:.2f}",
            f"{burst_rate * args.new_tokens:.0f}",
            f"{support.percentile(replies, 0.5) * 1000:.0f} / "
            f"{support.percentile(replies, 0.95) * 1000:.0f}",
            f"{max(acks) * 1000:.0f}",
            f"{burst_rate / pipeline_rate:.1f}x",
        ],
    ]
    headers = ["path", "tweets/s", "tokens/s", "reply p50 / p95 ms", "max ack ms", "vs pipeline"]
    print(support.table(headers, rows))
    print()
    speedup = burst_rate / pipeline_rate
    met_speed = speedup >= TARGET_SPEEDUP
    met_ack = failed == 0 and max(acks) < ACK_DEADLINE_S
    print(support.verdict(met_speed, f"burst >= {TARGET_SPEEDUP:g}x the pipeline: {speedup:.1f}"))
    print(
        support.verdict(
            met_ack,
            f"every interaction acknowledged within {ACK_DEADLINE_S:g} s: "
            f"max {max(acks):.2f} s, {failed} missed",
        )
    )
    return met_speed and met_ack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="members per burst")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    support.quiet_transformers()
    print(
        f"{support.machine(args.device)}; {torch.get_num_threads()} threads, dtype "
        f"{args.dtype}, {args.concurrency} requests of 1 tweet x {args.new_tokens} tokens, "
        f"{args.rounds} interleaved rounds\n"
    )
    with tempfile.TemporaryDirectory(prefix="tweetlike-bench-") as tmp:
        met = asyncio.run(bench(args, Path(tmp)))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
