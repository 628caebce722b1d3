"""Cleaning and counting, checked by hand against huggingtweets' rules (PRODUCT.md §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot
from bot.sources.tweets import Tweet
from bot.training.cleaning import clean_account, clean_text, is_retweet, is_short

SAMPLE = Path(bot.__file__).parent / "assets" / "sample_tweets.txt"


def tweets(*texts: str) -> list[Tweet]:
    return [Tweet(id=str(100 + i), text=text) for i, text in enumerate(texts)]


def test_retweets_are_recognised_by_flag_or_rt_prefix() -> None:
    assert is_retweet(Tweet(id="1", text="a perfectly normal tweet", is_retweet=True))
    assert is_retweet(Tweet(id="2", text="RT @someone: their words, not mine"))
    assert not is_retweet(Tweet(id="3", text="I said RT @someone once in a sentence"))


def test_only_the_three_entities_x_escapes_are_unescaped() -> None:
    assert clean_text("bread &amp; jam &lt;3 &gt; toast") == "bread & jam <3 > toast"
    assert clean_text("I typed &amp;lt; literally") == "I typed &lt; literally"
    assert clean_text("caf&eacute; stays") == "caf&eacute; stays"


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("look https://t.co/abc123 here", "look here"),
        ("old http://example.com/x?y=1 link", "old link"),
        ("see www.example.org/page now", "see now"),
        ("HTTPS://EXAMPLE.COM shouting", "shouting"),
        ("https://t.co/only", ""),
    ],
)
def test_urls_are_removed(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_whitespace_and_newlines_collapse_by_default() -> None:
    assert clean_text("  one\ttwo\n\nthree   four  ") == "one two three four"


def test_newlines_survive_when_collapse_is_off() -> None:
    text = "line  one \n\n  line\ttwo https://t.co/x \nthree"
    assert clean_text(text, collapse_newlines=False) == "line one\nline two\nthree"


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("one two three", False),
        ("one two", True),
        ("@friend #tag http://x one two", True),
        ("@friend thanks so much", False),  # a reply with three real words is kept
        ("#Baking #HTTP #Love", True),
        ("email@home counts not", True),  # any word containing @ is not a real word
        ("HTTPstuff is boring", True),  # case-insensitive http substring
        ("", True),
    ],
)
def test_short_tweets_have_fewer_than_three_real_words(text: str, short: bool) -> None:
    assert is_short(text) is short


def test_counts_add_up_on_a_hand_checked_timeline() -> None:
    timeline = [
        *tweets(
            "RT @other: a retweet with plenty of words in it",  # retweet by prefix
            "Saturn was lovely &amp; bright tonight",  # kept
            "@friend I agree with you",  # reply, kept
            "wow https://t.co/abc nice",  # short once the URL is gone
            "#astronomy #baking",  # short
            "Baking bread\nat   midnight https://t.co/x",  # kept, cleaned
        ),
        Tweet(id="200", text="flagged retweet text with words", is_retweet=True),
    ]
    account = clean_account("pip", timeline)
    assert (account.downloaded, account.retweets, account.short, len(account.kept)) == (7, 2, 2, 3)
    assert account.downloaded == account.retweets + account.short + len(account.kept)
    assert account.kept == [
        "Saturn was lovely & bright tonight",
        "@friend I agree with you",
        "Baking bread at midnight",
    ]


def test_newest_tweet_id_is_numeric_not_lexical() -> None:
    account = clean_account(
        "pip", [Tweet(id="9", text="nine is small"), Tweet(id="10", text="ten is bigger")]
    )
    assert account.newest_tweet_id == "10"


def test_size_is_the_length_of_kept_tweets_joined_with_endoftext() -> None:
    account = clean_account("pip", tweets("one two three", "four five six"))
    assert account.characters == len("one two three<|endoftext|>four five six")


def test_sample_account_counts() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    account = clean_account("sample", tweets(*lines))
    # 10 "RT @" lines; 8 short: Lovely! / Clear skies! / Wow. / Goodnight stars. / Yes! /
    # Bread. Bread. / @larkspur_astro thanks! / #astronomy #baking
    assert (account.downloaded, account.retweets, account.short) == (352, 10, 8)
    assert len(account.kept) == 334
    assert 6_000 < account.characters < 40_000
