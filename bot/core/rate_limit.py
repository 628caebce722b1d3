"""Per-member limits on generation requests: a short burst, a steady refill, one at a time.

A fixed gap between requests punished the very thing the 🔁 button invites (read a reply,
press again). Members instead get an allowance, as users of rate-limited bots expect: up to
``discord.rate_limit_burst`` requests in a row, refilled at ``discord.rate_limit_per_minute``
(a token bucket), and at most one request in flight, so nobody can queue a pile of
generations ahead of everyone else. Someone who reads each reply before asking again never
runs out; someone who presses as fast as they can is told exactly when they may ask again.

A second request while the first is generating (🔁 on one's own reply included) is refused
at once rather than queued behind it: it is nearly always a double press or impatience,
queuing it would post a second reply nobody meant to ask for and hold a generation slot
others are waiting for, and the refusal is private and instant. The request is in flight
only until its reply is ready, so 🔁 pressed the moment the reply appears is served.

Keyed by user only, never by channel or guild: a member cannot dodge the limit by asking in
another channel, and one busy member does not slow down anyone else in the channel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bot.config import DiscordSettings

_FORGET_AFTER = 10_000  # members tracked before those with a full allowance are forgotten

STILL_GENERATING = (
    "Your previous request is still being generated; it will appear in a moment. "
    "Ask again once it has."
)


class MemberLimits:
    """The allowance and the one-in-flight rule for every member.

    The bucket is kept as one timestamp per member (the generic cell rate algorithm): the
    time at which their allowance would be full again. That is exact with floats where a
    running token count drifts, and a member whose time has passed needs no entry at all.
    """

    def __init__(
        self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.per_minute = per_minute
        self._interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._clock = clock
        self._full_at: dict[int, float] = {}
        self._in_flight: set[int] = set()

    @classmethod
    def from_settings(
        cls, discord: DiscordSettings, clock: Callable[[], float] = time.monotonic
    ) -> MemberLimits:
        return cls(discord.rate_limit_burst, discord.rate_limit_per_minute, clock)

    def refusal(self, user_id: int) -> str | None:
        """Why the member may not ask now (saying when they may), or None if they may."""
        if user_id in self._in_flight:
            return STILL_GENERATING
        wait = self.retry_after(user_id)
        if wait <= 0:
            return None
        return (
            f"Slow down a little: you can ask again in {math.ceil(wait)}s. Everyone gets "
            f"{self.burst} requests in a row, then one every {_seconds(self._interval)}; "
            "others are not held up by your wait."
        )

    def retry_after(self, user_id: int) -> float:
        """Seconds until the member has a request in their allowance again; 0 if now."""
        if not self._interval:
            return 0.0
        full_at = self._full_at.get(user_id)
        if full_at is None:
            return 0.0
        # A full allowance holds `burst` requests, each worth one interval.
        return max(0.0, full_at - (self.burst - 1) * self._interval - self._clock())

    @contextmanager
    def request(self, user_id: int) -> Iterator[None]:
        """One admitted request: spends from the allowance and is in flight until exit."""
        self._spend(user_id)
        self._in_flight.add(user_id)
        try:
            yield
        finally:
            self._in_flight.discard(user_id)

    def refund(self, user_id: int) -> None:
        """Give back a request the bot could not serve (busy), so it is not held against them."""
        if self._interval and user_id in self._full_at:
            self._full_at[user_id] -= self._interval

    def _spend(self, user_id: int) -> None:
        if not self._interval:
            return
        now = self._clock()
        self._full_at[user_id] = max(self._full_at.get(user_id, now), now) + self._interval
        if len(self._full_at) > _FORGET_AFTER:
            self._full_at = {u: t for u, t in self._full_at.items() if t > now}


def _seconds(interval: float) -> str:
    return f"{interval:.0f}s" if interval >= 1 else f"{interval:.1f}s"
