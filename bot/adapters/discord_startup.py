"""Getting through to Discord at start-up: retry what an outage breaks, fail in one line.

During an incident Discord's REST API answers 5xx (often a Cloudflare 502/503 page), and a
host that starts the bot at boot may not have its network yet. discord.py retries
500/502/504/524 on its own (five tries, 1 to 9 s apart) but raises at once on a 503, any
other 5xx or a refused connection, and its exceptions would reach the operator as a
traceback. So logging in and fetching the gateway URL are retried a few times here, with
exponential backoff and a warning per failed attempt, before the bot gives up with one line
that says what Discord answered. Errors a retry cannot fix (a refused token, another 4xx)
fail at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import discord

from bot.errors import TweetlikeError

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_REFUSED = (
    "Discord refused the bot token (discord.token); copy it again from the developer portal "
    "into TWEETLIKE_DISCORD__TOKEN"
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a start-up step is tried (tests make the delays tiny)."""

    attempts: int = 4
    first_delay: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.multiplier < 1:
            raise ValueError(f"not a usable retry policy: {self}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        return self.first_delay * self.multiplier ** (failures - 1)


# 2 + 4 + 8 s between four attempts: long enough to ride out a short incident or a network
# that comes up just after the bot, short enough that a real outage is reported in a minute.
START_UP_RETRIES = RetryPolicy()


@dataclass(frozen=True)
class Problem:
    text: str
    transient: bool


def diagnose(exc: BaseException, api_base_url: str) -> Problem | None:
    """What went wrong talking to Discord, and whether trying again may help; None if
    ``exc`` is not about reaching Discord (a bug, to be raised as it is)."""
    if isinstance(exc, discord.LoginFailure):
        return Problem(TOKEN_REFUSED, transient=False)
    if isinstance(exc, discord.GatewayNotFound):
        if not isinstance(exc.__cause__, discord.HTTPException):
            return Problem("Discord gave no gateway URL (GET /gateway/bot)", transient=False)
        exc = exc.__cause__
    if isinstance(exc, discord.HTTPException):
        answer = f"Discord answered {exc.status} {exc.response.reason or ''}".rstrip()
        if exc.code and exc.text:  # Discord's own JSON error, not a proxy's error page
            answer += f" ({exc.text})"
        return Problem(answer, transient=exc.status >= 500)
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        detail = str(exc) or type(exc).__name__
        return Problem(f"cannot reach Discord at {api_base_url}: {detail}", transient=True)
    return None


async def retry_start_up(
    step: Callable[[], Awaitable[T]],
    what: str,
    api_base_url: str,
    policy: RetryPolicy = START_UP_RETRIES,
) -> T:
    """Run ``step``, trying again after transient failures; give up with one line.

    ``what`` names the step in messages ("logging in to Discord").
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    failures = 0
    while True:
        try:
            return await step()
        except Exception as exc:
            problem = diagnose(exc, api_base_url)
            if problem is None:
                raise
            if not problem.transient:
                raise TweetlikeError(f"{what} failed: {problem.text}") from None
            failures += 1
            if failures >= policy.attempts:
                elapsed = loop.time() - started
                raise TweetlikeError(
                    f"{what} failed {failures} times in {elapsed:.0f} s: {problem.text}; "
                    "if Discord is having an outage (https://discordstatus.com), start the "
                    "bot again later"
                ) from None
            delay = policy.delay(failures)
            log.warning(
                "%s failed: %s; trying again in %.1f s (attempt %d of %d)",
                what,
                problem.text,
                delay,
                failures + 1,
                policy.attempts,
            )
            await asyncio.sleep(delay)
