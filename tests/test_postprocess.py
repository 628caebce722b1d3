"""Tweet post-processing bounds: length, whitespace, newline cut, degenerate outputs."""

from __future__ import annotations

from bot.generation.postprocess import clean_tweet, is_degenerate
from bot.rules import TWEET_LIMIT, fit_tweet, normalize_prompt


def test_long_output_is_cut_to_280_chars_at_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    tweet = clean_tweet("Start", " " + words)
    assert len(tweet) <= TWEET_LIMIT
    assert tweet.startswith("Start word0")
    assert tweet.split()[-1] in words.split()  # the last word is whole


def test_a_single_word_longer_than_the_limit_is_hard_cut() -> None:
    assert fit_tweet("x" * 500, TWEET_LIMIT) == "x" * TWEET_LIMIT


def test_whitespace_is_collapsed_and_trimmed() -> None:
    assert clean_tweet("My dream is", "   to  \t fly   ") == "My dream is to fly"


def test_text_is_cut_at_the_first_newline() -> None:
    assert clean_tweet("Hi", " there\nsecond tweet") == "Hi there"


def test_newline_is_kept_as_a_space_when_the_model_does_not_stop_there() -> None:
    assert clean_tweet("Hi", " there\nstill me", stop_at_newline=False) == "Hi there still me"


def test_text_after_end_of_text_token_is_dropped() -> None:
    assert clean_tweet("", "one tweet<|endoftext|>another") == "one tweet"


def test_control_characters_and_broken_bytes_are_removed() -> None:
    assert clean_tweet("", "a\x13b\ufffd c\x00") == "ab c"


def test_prompt_is_normalized_to_one_line() -> None:
    assert normalize_prompt("  My\n dream   is ") == "My dream is"


def test_output_adding_nothing_to_the_prompt_is_degenerate() -> None:
    assert is_degenerate("My dream is", "My dream is")
    assert is_degenerate("My dream is ?!", "My dream is")
    assert is_degenerate("", "")


def test_looping_output_is_degenerate() -> None:
    assert is_degenerate("So lol lol lol lol lol lol lol lol", "So")


def test_ordinary_tweet_is_not_degenerate() -> None:
    assert not is_degenerate("My dream is to fly over the mountains", "My dream is")
