"""Turn a raw continuation into a tweet, and spot outputs not worth showing.

huggingtweets shows the prompt followed by what the model wrote, cut at the first newline
(the model learnt that a tweet ends there). Tweets are capped at X's post limit
(:data:`bot.rules.TWEET_LIMIT`, counted X's way), cut at a word boundary so no word is left
half-written.
"""

from __future__ import annotations

import re

from bot.rules import fit_tweet

EOS_TEXT = "<|endoftext|>"
# A continuation this repetitive ("lol lol lol lol ...") is a sampling failure, not a tweet.
MIN_DISTINCT_WORD_RATIO = 0.3
_MIN_WORDS_FOR_RATIO = 6
_WORD = re.compile(r"\w+")
# Control characters and U+FFFD (a byte sequence the model left unfinished) are never wanted.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")


def clean_tweet(prompt: str, continuation: str, *, stop_at_newline: bool = True) -> str:
    """``prompt`` + ``continuation`` cut at the end of the first tweet, tidied and bounded."""
    text = prompt + _UNPRINTABLE.sub("", continuation.split(EOS_TEXT, 1)[0])
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return fit_tweet(text)


def is_degenerate(tweet: str, prompt: str) -> bool:
    """True when the model added nothing readable, or looped on a few words."""
    added = tweet[len(prompt) :] if tweet.startswith(prompt) else tweet
    words = _WORD.findall(added.lower())
    if not words:
        return True
    return len(words) >= _MIN_WORDS_FOR_RATIO and len(set(words)) / len(words) < (
        MIN_DISTINCT_WORD_RATIO
    )
