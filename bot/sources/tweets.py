"""The one shape every source produces: a tweet as the X API v2 returns it, minus the rest.

Also the one rule for what may be stored as a tweet, whichever source it came from (an X
archive, a CSV, JSONL or text file, the X API): no longer than X allows for any post
(:data:`bot.rules.MAX_TWEET_CHARS`) and with some visible text. Anything else is skipped and
counted, so an import's summary can say what it left out and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bot.rules import MAX_TWEET_CHARS

Unfit = Literal["too long", "empty"]


@dataclass(frozen=True)
class Tweet:
    id: str
    text: str
    created_at: str | None = None  # ISO 8601 when known
    is_retweet: bool = False


@dataclass(frozen=True)
class Skipped:
    """How many tweets were left out, by reason."""

    too_long: int = 0
    empty: int = 0

    def __add__(self, other: Skipped) -> Skipped:
        return Skipped(self.too_long + other.too_long, self.empty + other.empty)

    @property
    def total(self) -> int:
        return self.too_long + self.empty

    def describe(self) -> str:
        """``skipped 2: 1 too long, 1 empty`` (only the reasons that occurred)."""
        reasons = ((self.too_long, "too long"), (self.empty, "empty"))
        return f"skipped {self.total:,}: " + ", ".join(f"{n:,} {why}" for n, why in reasons if n)


def unfit(text: str) -> Unfit | None:
    """Why ``text`` cannot be a tweet, or None when it can.

    Length is in code points: a text within X's weighted limit never has more, so no real
    post is refused. Visible means printable and not a space, so NUL, control and zero-width
    characters alone make an empty tweet.
    """
    if len(text) > MAX_TWEET_CHARS:
        return "too long"
    if not any(char.isprintable() and not char.isspace() for char in text):
        return "empty"
    return None


def keep_fit(tweets: Iterable[Tweet]) -> tuple[list[Tweet], Skipped]:
    """The tweets that may be stored, and a count of the others."""
    kept: list[Tweet] = []
    too_long = empty = 0
    for tweet in tweets:
        reason = unfit(tweet.text)
        if reason is None:
            kept.append(tweet)
        elif reason == "too long":
            too_long += 1
        else:
            empty += 1
    return kept, Skipped(too_long=too_long, empty=empty)


def id_key(tweet_id: str) -> int:
    """Tweet ids are decimal snowflakes: numeric order is time order."""
    return int(tweet_id)
