"""The per-handle tweet store: dedup by id, newest first, account record, safe writes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from bot.errors import DataError
from bot.sources.ids import SYNTHETIC_ID_BASE, newest_real_id, synthetic_id
from bot.sources.store import AccountInfo, TweetStore
from bot.sources.tweets import Tweet


@pytest.fixture
def store(tmp_path: Path) -> TweetStore:
    return TweetStore(tmp_path / "data")


def test_merge_deduplicates_by_id_never_by_text(store: TweetStore) -> None:
    store.merge("alice", [Tweet("1", "gm"), Tweet("2", "gm")], source="x")

    result = store.merge("alice", [Tweet("2", "edited"), Tweet("3", "gm")], source="x")

    assert (result.added, result.total) == (1, 3)
    assert [(t.id, t.text) for t in store.load("alice")] == [("3", "gm"), ("2", "gm"), ("1", "gm")]


def test_tweets_are_kept_newest_first_by_numeric_id(store: TweetStore) -> None:
    store.merge("alice", [Tweet("9", "a"), Tweet("100", "b"), Tweet("10", "c")], source="x")

    assert [t.id for t in store.load("alice")] == ["100", "10", "9"]
    assert store.newest_id("alice") == "100"


def test_handles_share_one_folder_whatever_their_case(store: TweetStore) -> None:
    store.merge("@Alice", [Tweet("1", "a")], source="x")

    assert [t.id for t in store.load("alice")] == ["1"]
    assert store.folder("ALICE") == store.data_dir / "alice"


def test_account_record_accumulates_sources_and_keeps_known_details(store: TweetStore) -> None:
    details = AccountInfo(handle="alice", user_id="7", display_name="Alice", avatar_url="u")
    store.merge("alice", [Tweet("1", "a")], source="x", account=details)

    store.merge("alice", [Tweet("2", "b")], source="import")

    account = store.account("alice")
    assert account is not None
    assert account.sources == ["x", "import"]
    assert (account.user_id, account.display_name, account.avatar_url) == ("7", "Alice", "u")


def test_merge_leaves_the_callers_account_untouched(store: TweetStore) -> None:
    details = AccountInfo(handle="alice")

    store.merge("alice", [Tweet("1", "a")], source="x", account=details)

    assert details.sources == []


def test_merge_leaves_no_temporary_files(store: TweetStore) -> None:
    store.merge("alice", [Tweet("1", "a")], source="x")
    store.merge("alice", [Tweet("2", "b")], source="x")

    assert sorted(p.name for p in store.folder("alice").iterdir()) == [
        ".lock",
        "account.json",
        "tweets.jsonl",
    ]


def test_corrupt_tweet_line_is_a_data_error_naming_the_line(store: TweetStore) -> None:
    store.merge("alice", [Tweet("1", "a")], source="x")
    path = store.folder("alice") / "tweets.jsonl"
    path.write_text(path.read_text() + "{not json\n")

    with pytest.raises(DataError, match=r"tweets\.jsonl:2 is not a stored tweet"):
        store.load("alice")


def test_corrupt_account_record_fails_before_anything_is_written(store: TweetStore) -> None:
    store.merge("alice", [Tweet("1", "a")], source="x")
    (store.folder("alice") / "account.json").write_text('{"handle": 5}')
    tweets_before = (store.folder("alice") / "tweets.jsonl").read_bytes()

    with pytest.raises(DataError, match="is not a stored account record"):
        store.merge("alice", [Tweet("2", "b")], source="x")
    assert (store.folder("alice") / "tweets.jsonl").read_bytes() == tweets_before


def test_synthetic_ids_are_stable_numeric_and_beyond_real_ids() -> None:
    first = synthetic_id("hello", 3)

    assert first == synthetic_id("hello", 3)
    assert first != synthetic_id("hello", 4)
    assert SYNTHETIC_ID_BASE <= int(first) < 2**64


def test_since_id_comes_from_real_ids_only() -> None:
    tweets = [Tweet(synthetic_id("x", 1), "x"), Tweet("1500", "y"), Tweet("20", "z")]

    assert newest_real_id(tweets) == "1500"
    assert newest_real_id([Tweet(synthetic_id("x", 1), "x")]) is None


def _merge_batch(data_dir: str, start: int) -> None:
    store = TweetStore(Path(data_dir))
    for offset in range(0, 20, 4):
        batch = [
            Tweet(id=str(start + offset + i), text=f"tweet {start + offset + i}") for i in range(4)
        ]
        store.merge("racer", batch, source="import")


def test_concurrent_merges_from_several_processes_keep_every_tweet(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_merge_batch, args=(str(tmp_path), start))
        for start in (1000, 2000, 3000, 4000)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(TweetStore(tmp_path).load("racer")) == 80


def test_merge_never_stores_text_that_cannot_be_a_tweet(store: TweetStore) -> None:
    tweets = [Tweet("1", "a real tweet"), Tweet("2", "x" * 25_001), Tweet("3", "\x00\u200b ")]

    result = store.merge("alice", tweets, source="x")

    assert [t.id for t in store.load("alice")] == ["1"]
    assert (result.added, result.total) == (1, 1)
    assert (result.skipped.too_long, result.skipped.empty) == (1, 1)
