"""`tweetlike import`: X archives, tweets.js, CSV, JSONL and text files built by the tests."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.config import Settings
from bot.errors import BlockedHandleError, DataError
from bot.sources.archive import import_tweets
from bot.sources.ids import SYNTHETIC_ID_BASE
from bot.sources.store import TweetStore
from bot.sources.tweets import Tweet

MakeSettings = Callable[..., Settings]


def archive_tweet(tweet_id: str, text: str, created_at: str = "Wed Oct 10 20:19:24 +0000 2018"):
    return {"tweet": {"id_str": tweet_id, "full_text": text, "created_at": created_at}}


def ytd(kind: str, items: list[Any], part: int = 0) -> str:
    return f"window.YTD.{kind}.part{part} = {json.dumps(items, indent=2)}"


ACCOUNT_JS = ytd(
    "account",
    [{"account": {"username": "fdgwhite", "accountId": "42", "accountDisplayName": "F. White"}}],
)


def write_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def load(settings: Settings, handle: str = "fdgwhite") -> list[Tweet]:
    return TweetStore(settings.storage.data_dir).load(handle)


def stored_bytes(settings: Settings, handle: str = "fdgwhite") -> dict[str, bytes]:
    folder = TweetStore(settings.storage.data_dir).folder(handle)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    return path


def test_archive_zip_imports_all_tweet_parts(tmp_path: Path, settings: Settings) -> None:
    archive = write_zip(
        tmp_path / "twitter-2024.zip",
        {
            "data/tweets.js": ytd(
                "tweets",
                [
                    archive_tweet("1050118621198921728", "my first tweet of the day"),
                    archive_tweet("1050118621198921729", "RT @bob: something worth sharing"),
                ],
            ),
            "data/tweets-part1.js": ytd(
                "tweets", [archive_tweet("1050118621198921730", "from the second part")], 1
            ),
            "data/deleted-tweets.js": ytd("deleted_tweets", [archive_tweet("7", "gone")]),
            "data/account.js": ACCOUNT_JS,
        },
    )

    result = import_tweets(settings, "fdgwhite", archive)

    assert (result.received, result.added, result.total) == (3, 3, 3)
    by_id = {t.id: t for t in load(settings)}
    assert set(by_id) == {"1050118621198921728", "1050118621198921729", "1050118621198921730"}
    assert by_id["1050118621198921729"].is_retweet
    assert not by_id["1050118621198921728"].is_retweet
    assert by_id["1050118621198921728"].created_at == "2018-10-10T20:19:24+00:00"


def test_archive_account_details_are_recorded(tmp_path: Path, settings: Settings) -> None:
    archive = write_zip(
        tmp_path / "archive.zip",
        {
            "data/tweets.js": ytd("tweets", [archive_tweet("5", "hello")]),
            "data/account.js": ACCOUNT_JS,
        },
    )

    import_tweets(settings, "fdgwhite", archive)

    account = TweetStore(settings.storage.data_dir).account("fdgwhite")
    assert account is not None
    assert (account.handle, account.user_id, account.display_name) == ("fdgwhite", "42", "F. White")
    assert account.sources == ["import"]


def test_older_archive_tweet_js_without_wrapper(tmp_path: Path, settings: Settings) -> None:
    items = [
        {"id_str": "11", "full_text": "from 2019", "created_at": "Mon Jan 07 10:00:00 +0000 2019"}
    ]
    archive = write_zip(tmp_path / "old.zip", {"data/tweet.js": ytd("tweet", items)})

    import_tweets(settings, "fdgwhite", archive)

    assert load(settings) == [Tweet("11", "from 2019", "2019-01-07T10:00:00+00:00", False)]


def test_bare_tweets_js_file(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.js"
    path.write_text(ytd("tweets", [archive_tweet("3", "a"), archive_tweet("4", "b")]))

    assert import_tweets(settings, "fdgwhite", path).added == 2


def test_extracted_archive_folder(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "archive" / "data").mkdir(parents=True)
    (tmp_path / "archive" / "data" / "tweets.js").write_text(
        ytd("tweets", [archive_tweet("3", "a")])
    )

    assert import_tweets(settings, "fdgwhite", tmp_path / "archive").added == 1


def test_csv_uses_id_and_created_at_columns(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text(
        "id,created_at,text\n"
        '20,2020-05-01T12:00:00+00:00,"hello, world"\n21,,"line one\nline two"\n'
    )

    import_tweets(settings, "fdgwhite", path)

    assert load(settings) == [
        Tweet("21", "line one\nline two", None, False),
        Tweet("20", "hello, world", "2020-05-01T12:00:00+00:00", False),
    ]


def test_tweets_without_ids_get_synthetic_ids_above_every_real_id(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text("Text,likes\nfirst tweet here,3\nRT @bob: second tweet,1\n")

    import_tweets(settings, "fdgwhite", path)

    tweets = load(settings)
    assert sorted(t.text for t in tweets) == ["RT @bob: second tweet", "first tweet here"]
    assert all(SYNTHETIC_ID_BASE <= int(t.id) < 2**64 for t in tweets)
    assert [t.is_retweet for t in tweets if t.text.startswith("RT")] == [True]


def test_jsonl_with_optional_fields(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.jsonl"
    path.write_text(
        '{"text": "plain one"}\n\n{"id": 30, "text": "with id", "created_at": "2021-02-03"}\n'
        '{"id": "31", "text": "flagged", "is_retweet": true}\n'
    )

    result = import_tweets(settings, "fdgwhite", path)

    assert result.added == 3
    by_text = {t.text: t for t in load(settings)}
    assert by_text["with id"] == Tweet("30", "with id", "2021-02-03T00:00:00", False)
    assert by_text["flagged"].is_retweet


def test_plain_text_is_one_tweet_per_line(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.txt"
    path.write_text("first line\n\n   \nsecond line\r\nthird line")

    result = import_tweets(settings, "fdgwhite", path)

    assert result.added == 3
    assert sorted(t.text for t in load(settings)) == ["first line", "second line", "third line"]


def test_identical_lines_stay_separate_tweets(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.txt"
    path.write_text("gm\ngm\ngm\n")

    assert import_tweets(settings, "fdgwhite", path).added == 3


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tweets.txt", "one\ntwo\n"),
        ("tweets.csv", "text\none\ntwo\n"),
        ("tweets.jsonl", '{"text": "one"}\n{"text": "two"}\n'),
        ("tweets.js", ytd("tweets", [archive_tweet("1", "one"), archive_tweet("2", "two")])),
    ],
)
def test_reimporting_the_same_file_adds_nothing(
    tmp_path: Path, settings: Settings, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    import_tweets(settings, "fdgwhite", path)
    before = [t.id for t in load(settings)]

    again = import_tweets(settings, "fdgwhite", path)

    assert (again.added, again.total) == (0, 2)
    assert [t.id for t in load(settings)] == before


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("export.dat", "id,text\n5,from a csv\n", "from a csv"),
        ("export", ytd("tweets", [archive_tweet("5", "from a js")]), "from a js"),
        ("export.log", '{"text": "from jsonl"}\n', "from jsonl"),
        ("export.log", "just words\n", "just words"),
    ],
)
def test_unknown_extensions_are_recognised_by_content(
    tmp_path: Path, settings: Settings, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    import_tweets(settings, "fdgwhite", path)

    assert [t.text for t in load(settings)] == [expected]


BAD_INPUTS: list[tuple[str, str | bytes, str]] = [
    ("archive.zip", b"this is not a zip", "is not a readable zip file"),
    ("empty.txt", b"", "is empty"),
    ("blank.csv", b"\n  \n", "is empty"),
    ("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    ("tweets.js", b'{"tweets": []}', "is not an X archive file"),
    ("tweets.js", b"window.YTD.tweets.part0 = [ {", "is not valid archive JSON"),
    ("tweets.js", b'window.YTD.tweets.part0 = {"a": 1}', "expected a list"),
    ("tweets.js", b'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1"}}]', "no full_text"),
    ("tweets.js", b'window.YTD.tweets.part0 = [{"tweet": {"full_text": "x"}}]', "no numeric id"),
    ("tweets.js", b"window.YTD.tweets.part0 = []", "holds no tweets"),
    ("tweets.csv", b"id,body\n1,hello\n", "has no 'text' column (columns: 'id', 'body')"),
    ("tweets.csv", b"text\n", "holds no tweets"),
    ("tweets.csv", b"id,text\nabc,hello\n", "id 'abc' is not a numeric tweet id"),
    ("tweets.csv", b"created_at,text\nyesterday,hello\n", "created_at 'yesterday' is not a date"),
    ("tweets.jsonl", b'{"text": "ok"}\n{"text": oops}\n', ":2 is not valid JSON"),
    ("tweets.jsonl", b'{"text": "ok"}\n{"body": "no text"}\n', ":2 is not an object with a 'text'"),
    ("tweets.jsonl", b'["a list"]\n', ":1 is not an object"),
    ("tweets.json", b'[{"text": "a"}]', "looks like a JSON array"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS)
def test_bad_input_is_a_data_error(
    tmp_path: Path, settings: Settings, name: str, content: bytes | str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())

    with pytest.raises(DataError) as raised:
        import_tweets(settings, "fdgwhite", path)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_zip_without_tweets_js_is_a_data_error(tmp_path: Path, settings: Settings) -> None:
    archive = write_zip(
        tmp_path / "photos.zip", {"photo.jpg": b"\xff\xd8", "data/deleted-tweets.js": ""}
    )

    with pytest.raises(DataError, match=r"has no data/tweets\.js"):
        import_tweets(settings, "fdgwhite", archive)


def test_zip_with_corrupt_tweets_js_is_a_data_error(tmp_path: Path, settings: Settings) -> None:
    archive = write_zip(tmp_path / "a.zip", {"data/tweets.js": b"window.YTD.tweets.part0 = [ nope"})

    with pytest.raises(DataError, match=r"a\.zip:data/tweets\.js is not valid archive JSON"):
        import_tweets(settings, "fdgwhite", archive)


def test_missing_file_is_a_data_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(DataError, match="does not exist"):
        import_tweets(settings, "fdgwhite", tmp_path / "nowhere.csv")


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS[:6])
def test_cli_refuses_bad_input_and_leaves_stored_data_byte_identical(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    message: str,
) -> None:
    config = write_config(tmp_path)
    good = tmp_path / "good.txt"
    good.write_text("a tweet that is already stored\nand another one\n")
    assert main(["--config", str(config), "import", "fdgwhite", str(good)]) == 0
    folder = tmp_path / "data" / "fdgwhite"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = tmp_path / name
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    capsys.readouterr()

    status = main(["--config", str(config), "import", "fdgwhite", str(bad)])

    captured = capsys.readouterr()
    assert status != 0
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("tweetlike: error: ") and message in captured.err
    assert captured.out == ""
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_blocked_handle_is_refused_before_reading(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(training={"blocked_handles": ["@OptedOut"]})

    with pytest.raises(BlockedHandleError):
        import_tweets(settings, "optedout", tmp_path / "does-not-exist.zip")
    assert not settings.storage.data_dir.exists()


def test_cli_import_prints_a_one_line_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    path = tmp_path / "tweets.txt"
    path.write_text("one tweet\ntwo tweets\n")

    assert main(["--config", str(config), "import", "@FdgWhite", str(path)]) == 0
    assert capsys.readouterr().out == "fdgwhite: 2 new tweets, 2 stored\n"
