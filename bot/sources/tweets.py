"""The one shape every source produces: a tweet as the X API v2 returns it, minus the rest."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tweet:
    id: str
    text: str
    created_at: str | None = None  # ISO 8601 when known
    is_retweet: bool = False


def id_key(tweet_id: str) -> int:
    """Tweet ids are decimal snowflakes: numeric order is time order."""
    return int(tweet_id)
