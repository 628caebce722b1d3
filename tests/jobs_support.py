"""Shared pieces of the job runner tests: a recording Notifier, data set-up, waiting.

:class:`RecordingNotifier` implements :class:`bot.core.ports.Notifier` (our own interface,
not a library's) and records every call, so tests can check which channel got what, whom
it pinged and which message a progress update edited.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fakes import WAIT_SECONDS

from bot.config import Settings
from bot.core.replies import GeneratedTweets
from bot.sources.store import TweetStore
from bot.sources.tweets import Tweet

if TYPE_CHECKING:
    from bot.jobs.manager import JobManager

WORDS = [
    *("dream", "night", "coffee", "code", "music", "river", "light", "city", "morning"),
    *("train", "garden", "book", "window", "rain", "friend", "story", "ocean", "bread"),
]


@dataclass(frozen=True)
class PostedTweets:
    channel_id: int
    tweets: GeneratedTweets
    mention_user_id: int | None


@dataclass(frozen=True)
class PostedText:
    channel_id: int
    text: str
    mention_user_id: int | None


@dataclass(frozen=True)
class ProgressCall:
    channel_id: int
    job_id: str
    text: str
    message_id: int | None
    returned_id: int
    finished: bool = False


@dataclass
class RecordingNotifier:
    tweets: list[PostedTweets] = field(default_factory=list)
    texts: list[PostedText] = field(default_factory=list)
    progress: list[ProgressCall] = field(default_factory=list)
    failing_channels: set[int] = field(default_factory=set)
    _next_message_id: int = 1000

    async def post_tweets(
        self, channel_id: int, tweets: GeneratedTweets, *, mention_user_id: int | None = None
    ) -> None:
        if channel_id in self.failing_channels:
            raise PermissionError(f"Missing Access to channel {channel_id}")
        self.tweets.append(PostedTweets(channel_id, tweets, mention_user_id))

    async def post_text(
        self, channel_id: int, text: str, *, mention_user_id: int | None = None
    ) -> None:
        self.texts.append(PostedText(channel_id, text, mention_user_id))

    async def post_progress(
        self,
        channel_id: int,
        job_id: str,
        text: str,
        *,
        message_id: int | None,
        finished: bool = False,
    ) -> int | None:
        returned_id = message_id
        if returned_id is None:
            self._next_message_id += 1
            returned_id = self._next_message_id
        self.progress.append(
            ProgressCall(channel_id, job_id, text, message_id, returned_id, finished)
        )
        return returned_id


def store_tweets(settings: Settings, handle: str, count: int, *, first_id: int = 1000) -> None:
    """Import ``count`` plausible tweets (nine words each, seeded) for ``handle``."""
    rng = random.Random(first_id)
    tweets = [
        Tweet(id=str(first_id + i), text=" ".join(rng.choice(WORDS) for _ in range(9)))
        for i in range(count)
    ]
    TweetStore(Path(settings.storage.data_dir)).merge(handle, tweets, source="import")


async def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed child may linger until reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def job_state(manager: JobManager, job_id: str) -> str | None:
    record = manager.state.job(job_id)
    return record.state if record else None


def finished(manager: JobManager, job_id: str) -> Callable[[], bool]:
    """Ended and done answering (the runner lets go of a job only after that)."""
    return lambda: (
        job_state(manager, job_id) not in ("queued", "running", None)
        and manager.running_count() == 0
    )
