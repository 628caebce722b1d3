"""`tweetlike fetch` and post_tweet: real tweepy against the fake X API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    BEARER_TOKEN,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    FakeXApi,
    weighted_length,
)

from bot.cli import main
from bot.config import Settings
from bot.errors import BlockedHandleError, SourceError
from bot.sources.ids import synthetic_id
from bot.sources.store import TweetStore
from bot.sources.tweets import Tweet
from bot.sources.x_api import fetch_tweets, post_tweet

MakeSettings = Callable[..., Settings]


@pytest.fixture
def x_settings(make_settings: MakeSettings, fake_x: FakeXApi) -> Callable[..., Settings]:
    """Settings whose X API is the fake, with the fake's bearer token unless overridden."""

    def factory(**x: Any) -> Settings:
        return make_settings(x={"bearer_token": BEARER_TOKEN, "api_base_url": fake_x.base_url, **x})

    return factory


def write_config(tmp_path: Path, fake: FakeXApi, bearer_token: str = BEARER_TOKEN) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[x]\nbearer_token = "{bearer_token}"\napi_base_url = "{fake.base_url}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\nmodels_dir = "{tmp_path / "models"}"\n',
        encoding="utf-8",
    )
    return path


def stored_bytes(settings: Settings, handle: str) -> dict[str, bytes]:
    folder = TweetStore(settings.storage.data_dir).folder(handle)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_fetch_pages_through_the_whole_timeline(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    tweets = fake_x.add_tweets("alice", 250)
    settings = x_settings()

    result = fetch_tweets(settings, "alice")

    assert (result.added, result.total) == (250, 250)
    pages = fake_x.requests_to("timeline")
    assert len(pages) == 3
    assert all(p.query["max_results"] == "100" for p in pages)
    assert "pagination_token" in pages[2].query
    stored = TweetStore(settings.storage.data_dir).load("alice")
    assert [t.id for t in stored] == [t.id for t in reversed(tweets)]


def test_fetch_keeps_at_most_max_tweets_newest(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    tweets = fake_x.add_tweets("alice", 250)
    settings = x_settings(max_tweets=120)

    result = fetch_tweets(settings, "alice")

    assert result.total == 120
    assert len(fake_x.requests_to("timeline")) == 2
    stored_ids = {t.id for t in TweetStore(settings.storage.data_dir).load("alice")}
    assert stored_ids == {t.id for t in tweets[-120:]}


def test_second_fetch_asks_only_for_newer_tweets(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    first = fake_x.add_tweets("alice", 30)
    settings = x_settings()
    fetch_tweets(settings, "alice")
    newer = fake_x.add_tweets("alice", 4, prefix="newer")

    result = fetch_tweets(settings, "alice")

    last_page = fake_x.requests_to("timeline")[-1]
    assert last_page.query["since_id"] == first[-1].id
    assert (result.received, result.added, result.total) == (4, 4, 34)
    stored = TweetStore(settings.storage.data_dir).load("alice")
    assert [t.id for t in stored[:4]] == [t.id for t in reversed(newer)]


def test_imported_tweets_without_ids_do_not_limit_the_fetch(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 5)
    settings = x_settings()
    imported = Tweet(synthetic_id("an old tweet", 1), "an old tweet")
    TweetStore(settings.storage.data_dir).merge("alice", [imported], source="import")

    result = fetch_tweets(settings, "alice")

    assert "since_id" not in fake_x.requests_to("timeline")[0].query
    assert (result.added, result.total) == (5, 6)


def test_retweets_are_flagged_and_replies_kept(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_user("bob")
    original = fake_x.add_tweet("bob", "a tweet by bob worth sharing")
    retweet = fake_x.add_retweet("alice", original, "bob")
    quoted_style = fake_x.add_tweet(
        "alice",
        "shared without the RT prefix",
        referenced_tweets=[{"type": "retweeted", "id": "1"}],
    )
    reply = fake_x.add_reply("alice", "@bob I agree with this one", original)
    plain = fake_x.add_tweet("alice", "RT is not a retweet unless it is RT @someone")
    settings = x_settings()

    fetch_tweets(settings, "alice")

    flags = {t.id: t.is_retweet for t in TweetStore(settings.storage.data_dir).load("alice")}
    assert flags == {retweet.id: True, quoted_style.id: True, reply.id: False, plain.id: False}


def test_tweets_that_cannot_be_posts_are_skipped_and_counted(
    fake_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweet("alice", "an ordinary tweet from alice")
    fake_x.add_tweet("alice", "z" * 25_001)
    fake_x.add_tweet("alice", "\u200b\u200b")
    config = write_config(tmp_path, fake_x)

    assert main(["--config", str(config), "fetch", "alice"]) == 0

    out = capsys.readouterr().out
    assert out == "alice: 1 new tweet, 1 stored; skipped 2: 1 too long, 1 empty\n"
    stored = TweetStore(tmp_path / "data").load("alice")
    assert [t.text for t in stored] == ["an ordinary tweet from alice"]


def test_account_details_and_source_are_recorded(fake_x: FakeXApi, x_settings) -> None:
    user = fake_x.add_user("Alice", name="Alice Liddell", profile_image_url="https://img/a.jpg")
    fake_x.add_tweets("alice", 5)
    settings = x_settings()

    fetch_tweets(settings, "@ALICE")

    account = TweetStore(settings.storage.data_dir).account("alice")
    assert account is not None
    assert (account.user_id, account.display_name, account.avatar_url) == (
        user.id,
        "Alice Liddell",
        "https://img/a.jpg",
    )
    assert account.sources == ["x"]
    user_fields = fake_x.requests_to("user")[0].query["user.fields"].split(",")
    assert {"name", "profile_image_url", "protected"} <= set(user_fields)


def test_progress_rises_to_one(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 250)
    seen: list[float] = []

    fetch_tweets(x_settings(), "alice", on_progress=seen.append)

    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert 0 < seen[0] < 1


def test_rate_limit_waits_for_the_reset_then_succeeds(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 10)
    fake_x.fail_next(429, route="timeline", reset_in=1.0)

    result = fetch_tweets(x_settings(), "alice")

    assert result.added == 10
    limited, retried = fake_x.requests_to("timeline")
    assert retried.at >= int(limited.at + 1.0)  # not before x-rate-limit-reset


def test_wrong_bearer_token_exits_non_zero_with_one_line(
    fake_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_x.add_user("alice")
    config = write_config(tmp_path, fake_x, bearer_token="not-the-token")

    status = main(["--config", str(config), "fetch", "alice"])

    err = capsys.readouterr().err.strip()
    assert status != 0
    assert len(err.splitlines()) == 1
    assert "401" in err and "x.bearer_token" in err
    assert not (tmp_path / "data" / "alice").exists()


def test_forbidden_app_is_a_clear_error(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.fail_next(403)

    with pytest.raises(SourceError, match=r"403 Forbidden.*enrolled"):
        fetch_tweets(x_settings(), "alice")


def test_missing_bearer_token_names_the_setting(fake_x: FakeXApi, x_settings) -> None:
    with pytest.raises(SourceError, match=r"x.bearer_token.*TWEETLIKE_X__BEARER_TOKEN"):
        fetch_tweets(x_settings(bearer_token=""), "alice")
    assert fake_x.requests == []


def test_unknown_user_is_a_clear_error(fake_x: FakeXApi, x_settings) -> None:
    with pytest.raises(SourceError, match="@ghost does not exist on X"):
        fetch_tweets(x_settings(), "ghost")


def test_protected_user_is_refused_before_reading_tweets(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("locked", protected=True)
    fake_x.add_tweets("locked", 5)

    with pytest.raises(SourceError, match="protected"):
        fetch_tweets(x_settings(), "locked")
    assert fake_x.requests_to("timeline") == []


def test_suspended_user_is_a_clear_error(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("banned", suspended=True)

    with pytest.raises(SourceError, match="@banned is suspended"):
        fetch_tweets(x_settings(), "banned")


def test_failure_part_way_leaves_the_store_as_it_was(
    fake_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 20)
    config = write_config(tmp_path, fake_x)
    assert main(["--config", str(config), "fetch", "alice"]) == 0
    folder = tmp_path / "data" / "alice"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fake_x.add_tweets("alice", 250, prefix="newer")
    fake_x.fail_next(500, route="timeline", after=2)
    capsys.readouterr()

    status = main(["--config", str(config), "fetch", "alice"])

    err = capsys.readouterr().err
    assert status != 0
    assert "after 200 tweets" in err and "500 Internal Server Error" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_unreachable_api_is_a_source_error(make_settings: MakeSettings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = make_settings(
        x={"bearer_token": "t", "api_base_url": f"http://127.0.0.1:{closed_port}"}
    )

    with pytest.raises(SourceError, match="cannot reach the X API"):
        fetch_tweets(settings, "alice")


def test_blocked_handle_is_never_requested(fake_x: FakeXApi, make_settings: MakeSettings) -> None:
    fake_x.add_user("optedout")
    settings = make_settings(
        x={"bearer_token": BEARER_TOKEN, "api_base_url": fake_x.base_url},
        training={"blocked_handles": ["optedout"]},
    )

    with pytest.raises(BlockedHandleError):
        fetch_tweets(settings, "@OptedOut")
    assert fake_x.requests == []


def test_cli_fetch_prints_a_one_line_summary(
    fake_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 12)
    config = write_config(tmp_path, fake_x)

    assert main(["--config", str(config), "fetch", "alice"]) == 0
    assert capsys.readouterr().out == "alice: 12 new tweets, 12 stored\n"


def poster_settings(make_settings: MakeSettings, fake: FakeXApi) -> Settings:
    return make_settings(
        x={
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
            "access_token": ACCESS_TOKEN,
            "access_token_secret": ACCESS_TOKEN_SECRET,
            "api_base_url": fake.base_url,
        }
    )


def test_post_tweet_reaches_x_in_user_context(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    tweet_id = post_tweet(poster_settings(make_settings, fake_x), "My dream is a quiet morning")

    assert [t.id for t in fake_x.posted] == [tweet_id]
    assert fake_x.posted[0].text.startswith("My dream is a quiet morning\n\n")
    request = fake_x.requests_to("post")[0]
    assert request.authorization is not None
    assert request.authorization.startswith("OAuth ")


def test_post_tweet_cuts_text_at_a_word_to_fit_280_with_its_label(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    post_tweet(poster_settings(make_settings, fake_x), "word " * 100)

    posted = fake_x.posted[0].text
    body, label = posted.split("\n\n")
    assert label == "🤖 AI-generated"
    assert body.endswith("…") and set(body[:-1].split(" ")) == {"word"}
    assert 270 < weighted_length(posted) <= 280  # cut at a word, as X weighs it


def test_post_tweet_refused_by_x_is_a_source_error(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    settings = poster_settings(make_settings, fake_x)
    post_tweet(settings, "the same words twice")

    with pytest.raises(SourceError, match="duplicate content"):
        post_tweet(settings, "the same words twice")


def test_post_tweet_without_user_credentials_names_the_keys(
    fake_x: FakeXApi, make_settings: MakeSettings
) -> None:
    settings = make_settings(x={"bearer_token": BEARER_TOKEN, "api_base_url": fake_x.base_url})

    with pytest.raises(SourceError, match=r"x.consumer_key.*TWEETLIKE_X__ACCESS_TOKEN_SECRET"):
        post_tweet(settings, "hello")
    assert fake_x.requests == []


def test_stored_file_is_valid_jsonl_with_iso_dates(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 3)
    settings = x_settings()

    fetch_tweets(settings, "alice")

    lines = stored_bytes(settings, "alice")["tweets.jsonl"].decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["created_at"] for r in rows] == [
        "2023-01-01T00:00:03+00:00",
        "2023-01-01T00:00:02+00:00",
        "2023-01-01T00:00:01+00:00",
    ]


async def test_fake_serves_clients_on_a_running_event_loop(fake_x: FakeXApi, x_settings) -> None:
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 5)

    result = await asyncio.to_thread(fetch_tweets, x_settings(), "alice")
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{fake_x.base_url}/2/users/by/username/alice",
            headers={"Authorization": f"Bearer {BEARER_TOKEN}"},
        ) as response,
    ):
        body = await response.json()

    assert result.added == 5
    assert body == {"data": {"id": "1000", "name": "Alice", "username": "alice"}}
