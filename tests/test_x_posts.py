"""Posts to X: every one carries the AI label, fits X's 280, and notifies nobody."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    FakeXApi,
    mentions,
    weighted_length,
)

from bot.cli import main
from bot.config import Settings
from bot.sources.x_api import post_tweet

MakeSettings = Callable[..., Settings]

# Every way of writing a mention that X (twitter-text) turns into a notification.
MENTIONING = "@alice says hi .@bob (@carol) RT @dave RT:@erin ＠frank @gina/friends"
MENTIONED = ["alice", "bob", "carol", "dave", "erin", "frank", "gina"]


def poster(make_settings: MakeSettings, fake: FakeXApi, **x: str) -> Settings:
    return make_settings(
        x={
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
            "access_token": ACCESS_TOKEN,
            "access_token_secret": ACCESS_TOKEN_SECRET,
            "api_base_url": fake.base_url,
            **x,
        }
    )


def test_the_fake_finds_every_form_of_mention_as_x_does() -> None:
    assert mentions(MENTIONING) == MENTIONED
    assert mentions("mail me at someone@example.com, #tag $CASH") == []


def test_a_post_carries_the_default_ai_label(fake_x: FakeXApi, make_settings: MakeSettings) -> None:
    post_tweet(poster(make_settings, fake_x), "My dream is a quiet morning")

    assert fake_x.posted[0].text == "My dream is a quiet morning\n\n🤖 AI-generated"


def test_a_post_carries_the_configured_label(fake_x: FakeXApi, make_settings: MakeSettings) -> None:
    settings = poster(make_settings, fake_x, post_label="  Parody bot ·\n not the real account ")

    post_tweet(settings, "My dream is a quiet morning")

    assert fake_x.posted[0].text.endswith("\n\nParody bot · not the real account")


def test_mentions_in_a_post_notify_nobody_and_still_read_as_written(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    post_tweet(poster(make_settings, fake_x), MENTIONING)

    posted = fake_x.posted[0]
    assert posted.mentions == []
    assert posted.text.replace("\u200b", "").startswith(MENTIONING)


def test_a_mention_in_the_label_notifies_nobody(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    settings = poster(make_settings, fake_x, post_label="AI bot run by @operator")

    post_tweet(settings, "a quiet morning")

    assert fake_x.posted[0].mentions == []


def test_hashtags_and_cashtags_are_posted_unchanged(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    post_tweet(poster(make_settings, fake_x), "buying #bread and $TSLA today")

    assert fake_x.posted[0].text.startswith("buying #bread and $TSLA today\n\n")


def test_a_long_text_full_of_mentions_and_emoji_fits_with_its_label(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    post_tweet(poster(make_settings, fake_x), "🌊 @sea_lover waves " * 40)

    posted = fake_x.posted[0]
    assert weighted_length(posted.text) <= 280
    assert posted.text.endswith("…\n\n🤖 AI-generated")
    assert posted.mentions == []


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("", "x.post_label = '': every post to X carries an AI label"),
        (" \u200b ", "cannot be turned off"),
        ("AI " * 20, "x.post_label = 'AI AI"),
    ],
    ids=["empty", "invisible", "too-long"],
)
def test_the_label_cannot_be_turned_off_or_crowd_out_the_tweet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[x]\npost_label = "{label}"\n', encoding="utf-8")

    status = main(["--config", str(config), "models"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("tweetlike: error: config error")
    assert message in err
