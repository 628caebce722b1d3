"""Per-user cooldown for generation requests.

Keyed by user only, never by channel or guild: a member cannot dodge the wait by asking in
another channel, and one busy member does not slow down everyone else in a channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class UserCooldown:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[int, float] = {}

    def retry_after(self, user_id: int) -> float:
        """Seconds the user still has to wait; 0 when they may ask now."""
        last = self._last.get(user_id)
        if last is None:
            return 0.0
        return max(0.0, self.seconds - (self._clock() - last))

    def start(self, user_id: int) -> None:
        """Begin the user's cooldown now (called once a request is accepted)."""
        now = self._clock()
        self._last[user_id] = now
        if len(self._last) > 10_000:
            self._forget_expired(now)

    def release(self, user_id: int) -> None:
        """Undo the cooldown of a request the bot could not serve (busy), so it is not held
        against the user."""
        self._last.pop(user_id, None)

    def _forget_expired(self, now: float) -> None:
        self._last = {u: t for u, t in self._last.items() if now - t < self.seconds}
