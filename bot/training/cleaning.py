"""Tweet cleaning and the data counts, computed exactly as huggingtweets did (PRODUCT.md §5).

The four numbers on every model card come from here, so they must add up:
``downloaded = retweets + short + kept``. Replies are kept (huggingtweets kept them);
retweets are someone else's voice; "short" tweets have too few real words to teach a style.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.model_store import HandleStats
from bot.sources.tweets import Tweet, id_key

# huggingtweets deleted ``http:\S+`` / ``https:\S+``; bare ``www.`` links are URLs too.
_URL = re.compile(r"(?:https?:|\bwww\.)\S+", re.IGNORECASE)
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BORING_MARKS = ("http", "@", "#")
MIN_REAL_WORDS = 3


def is_retweet(tweet: Tweet) -> bool:
    """Archives and old API payloads mark retweets only by the ``RT @`` prefix."""
    return tweet.is_retweet or tweet.text.lstrip().startswith("RT @")


def clean_text(text: str, *, collapse_newlines: bool = True) -> str:
    """Unescape the three entities X escapes, drop URLs, collapse whitespace.

    Only ``&amp; &lt; &gt;`` are unescaped, as X escapes only those; other ``&...;``
    sequences were typed by the author.
    """
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = _URL.sub("", text)
    if collapse_newlines:
        return " ".join(text.split())
    lines = _SPACE_AROUND_NEWLINE.sub("\n", _HORIZONTAL_SPACE.sub(" ", text))
    return "\n".join(line for line in lines.split("\n") if line).strip()


def is_short(cleaned: str) -> bool:
    """huggingtweets' "boring tweet": fewer than 3 words free of ``http``, ``@`` and ``#``."""
    real_words = [
        word for word in cleaned.split() if not any(mark in word.lower() for mark in _BORING_MARKS)
    ]
    return len(real_words) < MIN_REAL_WORDS


@dataclass(frozen=True)
class CleanedAccount:
    """One account's tweets after cleaning, with the counts the model card shows."""

    handle: str
    kept: list[str] = field(repr=False)
    downloaded: int
    retweets: int
    short: int
    newest_tweet_id: str | None

    @property
    def stats(self) -> HandleStats:
        return HandleStats(
            tweets_downloaded=self.downloaded,
            retweets=self.retweets,
            short_tweets=self.short,
            tweets_kept=len(self.kept),
        )

    @property
    def characters(self) -> int:
        """Size of the training text as huggingtweets measured it."""
        return len("<|endoftext|>".join(self.kept))


def clean_account(
    handle: str, tweets: Iterable[Tweet], *, collapse_newlines: bool = True
) -> CleanedAccount:
    """Count and clean every stored tweet of one account, keeping their order."""
    downloaded = retweets = short = 0
    kept: list[str] = []
    newest: str | None = None
    for tweet in tweets:
        downloaded += 1
        if newest is None or id_key(tweet.id) > id_key(newest):
            newest = tweet.id
        if is_retweet(tweet):
            retweets += 1
            continue
        cleaned = clean_text(tweet.text, collapse_newlines=collapse_newlines)
        if is_short(cleaned):
            short += 1
            continue
        kept.append(cleaned)
    return CleanedAccount(
        handle=handle,
        kept=kept,
        downloaded=downloaded,
        retweets=retweets,
        short=short,
        newest_tweet_id=newest,
    )
