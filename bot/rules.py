"""What a request may ask for and how long a tweet may be: the one home of these rules.

The service core, the generation engine, the Discord option ranges, the console help and the
X poster all read their limits from here, so a limit changed here changes everywhere, with
the same wording in every refusal. Limits that an operator may tune come from
:class:`bot.config.Settings` through :meth:`RequestRules.from_settings`; the rest are fixed.

Handle and model-name grammar lives in :mod:`bot.handles`; this module covers everything
else a request carries (prompt, count, temperature, seed, a training's epochs) and the length
of a tweet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import TweetlikeError

if TYPE_CHECKING:
    from bot.config import Settings

MIN_COUNT, MAX_COUNT = 1, 5
# Passes over an account's tweets in one training (``--epochs``, ``training.epochs``).
MIN_EPOCHS, MAX_EPOCHS = 1, 100
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
MAX_SEED = 2**63 - 1
# discord.max_prompt_chars: its default, and the most it may be raised to (a prompt longer
# than this leaves a GPT-2 context little room to write a tweet).
DEFAULT_PROMPT_CHARS = 200
PROMPT_CHARS_CEILING = 1000

# X's limit for one post, counted X's way (see weighted_length). Generated tweets are cut to
# it, so what Discord shows is what X would accept.
TWEET_LIMIT = 280
ELLIPSIS = "…"
# The longest post X accepts at all (a subscriber's long post). A stored tweet longer than
# this, counted in code points, cannot be a real post: imports and fetches skip it.
MAX_TWEET_CHARS = 25_000
# Room the AI label of a post to X (x.post_label) may take, weighted as X counts, so that a
# labelled post keeps most of its 280 for the tweet itself.
MAX_POST_LABEL_WEIGHT = 40
# Code point ranges X weighs as 1 (twitter-text configuration v3); the rest weigh 2.
_LIGHT_RANGES = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))


class RequestRuleError(TweetlikeError):
    """A request asked for something outside the rules; the message says what is allowed."""


@dataclass(frozen=True)
class RequestRules:
    """Bounds on what one generation request may carry."""

    max_prompt_chars: int = DEFAULT_PROMPT_CHARS

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestRules:
        return cls(max_prompt_chars=settings.discord.max_prompt_chars)

    def prompt(self, text: str) -> str:
        """The prompt as it will begin each tweet (one line, single spaces), within limits."""
        cleaned = normalize_prompt(text)
        if len(cleaned) > self.max_prompt_chars:
            raise RequestRuleError(
                f"The prompt is {len(cleaned)} characters; the limit is {self.max_prompt_chars}. "
                "Shorten it and try again."
            )
        return cleaned

    @staticmethod
    def count(value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestRuleError(f"count must be a whole number from {COUNT_RANGE}, not {value}.")
        if not MIN_COUNT <= value <= MAX_COUNT:
            raise RequestRuleError(f"count must be between {COUNT_RANGE}, not {value}.")
        return value

    @staticmethod
    def temperature(value: float | None) -> float | None:
        if value is not None and not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
            raise RequestRuleError(f"temperature must be between {TEMPERATURE_RANGE}, not {value}.")
        return value

    @staticmethod
    def seed(value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise RequestRuleError(f"seed must be between 0 and {MAX_SEED}, not {value}.")
        return value


def check_epochs(value: int | None) -> int | None:
    """``--epochs`` for one training; None leaves the choice to the config and the recipe."""
    if value is not None and not MIN_EPOCHS <= value <= MAX_EPOCHS:
        raise RequestRuleError(
            f"--epochs must be between {MIN_EPOCHS} and {MAX_EPOCHS} (got {value})"
        )
    return value


COUNT_RANGE = f"{MIN_COUNT} and {MAX_COUNT}"
TEMPERATURE_RANGE = f"{MIN_TEMPERATURE} and {MAX_TEMPERATURE}"
# How help texts show the ranges (console /help, Discord option descriptions).
COUNT_HINT = f"{MIN_COUNT}-{MAX_COUNT}"
TEMPERATURE_HINT = f"{MIN_TEMPERATURE}-{MAX_TEMPERATURE}"


def normalize_prompt(prompt: str) -> str:
    """One line, single spaces, no edges: generation stops at a newline anyway."""
    return " ".join(prompt.split())


def char_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _LIGHT_RANGES) else 2


def weighted_length(text: str) -> int:
    """Length as X counts it: most Latin, Greek, Cyrillic and punctuation weigh 1, the rest
    (CJK, emoji) 2."""
    return sum(char_weight(c) for c in text)


def fit_tweet(text: str, limit: int = TWEET_LIMIT, *, ellipsis: str = "") -> str:
    """``text`` on one line within ``limit`` weighted characters, cut at a word boundary
    when one exists (a single overlong word is hard-cut), ``ellipsis`` marking a cut."""
    text = " ".join(text.split())
    if weighted_length(text) <= limit:
        return text
    budget = limit - weighted_length(ellipsis)
    kept: list[str] = []
    used = 0
    for char in text:
        used += char_weight(char)
        if used > budget:
            break
        kept.append(char)
    cut = "".join(kept)
    space = cut.rfind(" ")
    if text[len(cut)] != " " and space > 0:  # the last word was cut: drop it
        cut = cut[:space]
    return cut.rstrip() + ellipsis
