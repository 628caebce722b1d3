"""Tweet ids: real ones come from X, imported tweets without one get a synthetic id.

Every real X id fits a signed 64-bit integer (snowflakes since late 2010, small sequential
numbers before), so it is below ``2**63``. Synthetic ids live in ``[2**63, 2**64)``: still
plain decimal strings, so numeric ordering (:func:`bot.sources.tweets.id_key`) keeps working,
yet they can never collide with a real tweet, and ``since_id`` for the X API is taken from
real ids only. A synthetic id is the top 63 bits of SHA-256 over the tweet's position in its
file and its text, so importing the same file again yields the same ids (and adds nothing),
while two identical lines of one file stay two tweets: tweets are deduplicated by id, never
by text (huggingtweets parity). The same tweets at other positions in another file get other
ids; only files with real ids (X archives) deduplicate across different files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bot.sources.tweets import Tweet, id_key

SYNTHETIC_ID_BASE = 2**63


def synthetic_id(text: str, position: int) -> str:
    digest = hashlib.sha256(f"{position}\n{text}".encode()).digest()
    return str(SYNTHETIC_ID_BASE + (int.from_bytes(digest[:8], "big") >> 1))


def is_real_id(tweet_id: str) -> bool:
    return tweet_id.isdecimal() and 0 < int(tweet_id) < SYNTHETIC_ID_BASE


def newest_real_id(tweets: Iterable[Tweet]) -> str | None:
    """The id to pass as ``since_id``: the newest tweet that really exists on X."""
    real = [t.id for t in tweets if is_real_id(t.id)]
    return max(real, key=id_key) if real else None
