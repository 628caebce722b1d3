"""``tweetlike demo``: the whole product on one machine, offline, in well under a minute.

It imports the bundled sample account as ``@sample``, trains it with the ``tiny`` base if no
model exists yet (the real pipeline, in-process, with its progress bar), then answers
``/tweetlike sample My dream is`` through the console adapter: the same service core that
serves Discord. Storage follows the configuration (``./data`` and ``./models`` by default),
so a second run reuses the trained model.

A model trained from scratch in seconds writes word salad, and a newcomer should not take
that for the product's quality: the demo says so, and says how to get real tweets.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path

from bot.adapters.console import PROMPT, ConsoleAdapter, ConsoleNotifier
from bot.base_models import TINY_NAME
from bot.config import Settings
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine
from bot.model_store import ModelStoreReader
from bot.sources.archive import import_tweets
from bot.sources.store import TweetStore
from bot.training.pipeline import train_command

SAMPLE_HANDLE = "sample"
DEMO_LINE = "/tweetlike sample My dream is count:3"
WHAT_YOU_SEE = f"""
These come from a tiny GPT-2 trained from scratch on @{SAMPLE_HANDLE}'s tweets in seconds, so
expect word salad. For tweets that read like the account, fine-tune the real GPT-2 (a 500 MB
download, then about a minute on a GPU or 5 to 10 minutes on a two-core CPU):
  tweetlike train {SAMPLE_HANDLE} --base-model gpt2
  tweetlike generate {SAMPLE_HANDLE} "My dream is" -n 3
To type requests yourself: tweetlike run --console"""


def run_demo(settings: Settings) -> int:
    _import_sample(settings)
    if ModelStoreReader(settings.storage.models_dir).serving_version_path(SAMPLE_HANDLE) is None:
        print(f"Training @{SAMPLE_HANDLE} with the '{TINY_NAME}' base model (progress on stderr)")
        train_command(settings, [SAMPLE_HANDLE], base_model=TINY_NAME, progress="bar")
    else:
        model_dir = Path(settings.storage.models_dir) / SAMPLE_HANDLE
        print(f"Using the trained model in {model_dir} (delete it to train again)")
    print(f"\n{PROMPT}{DEMO_LINE}")
    print(asyncio.run(_answer(settings, DEMO_LINE)))
    print(WHAT_YOU_SEE)
    return 0


def _import_sample(settings: Settings) -> None:
    if TweetStore(settings.storage.data_dir).load(SAMPLE_HANDLE):
        return
    asset = resources.files("bot") / "assets" / "sample_tweets.txt"
    with resources.as_file(asset) as path:
        result = import_tweets(settings, SAMPLE_HANDLE, path)
    print(result.summary())


async def _answer(settings: Settings, line: str) -> str:
    engine = GenerationEngine(settings)
    try:
        console = ConsoleAdapter(TweetlikeService(settings, engine), ConsoleNotifier(sys.stdout))
        return await console.answer(line) or ""
    finally:
        await asyncio.to_thread(engine.close)
