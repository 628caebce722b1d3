"""`tweetlike import`: X archives, tweets.js, CSV, JSONL and text files built by the tests."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.config import Settings
from bot.errors import BlockedHandleError, DataError
from bot.rules import MAX_TWEET_CHARS
from bot.sources import input_files
from bot.sources.archive import import_tweets
from bot.sources.ids import SYNTHETIC_ID_BASE, synthetic_id
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
    (
        "latin1.txt",
        "caf\u00e9 au lait\n".encode("latin-1"),
        "not UTF-8 text (byte 0xe9 at offset 3",
    ),
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
    assert status == 1
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


def test_text_lines_are_numbered_as_str_splitlines_numbers_them(
    tmp_path: Path, settings: Settings
) -> None:
    content = "\ufefffirst line\r\nsecond\rthird\x0bfourth\n\n  \nfifth line"
    path = tmp_path / "tweets.txt"
    path.write_text(content, encoding="utf-8")

    import_tweets(settings, "fdgwhite", path)

    lines = content.removeprefix("\ufeff").splitlines()
    expected = {synthetic_id(t.strip(), n) for n, t in enumerate(lines, 1) if t.strip()}
    assert {t.id for t in load(settings)} == expected


# -- binary input, devices and folders: one line, nothing stored ---------------------------

NOT_TEXT = "is binary or not UTF-8 text"


def binary_inputs(tmp_path: Path) -> dict[str, Path]:
    """One binary or undecodable file per way a format is chosen."""
    files: dict[str, bytes] = {
        "tweets.txt": b"a tweet\n\x00\x00\x00\n",
        "nul.txt": b"\x00" * 4096,
        "tweets.csv": b"id,text\n1,caf\xe9\n",
        "tweets.jsonl": b'{"text": "ok"}\n\xff\xfe{}\n',
        "tweets.js": b"window.YTD.tweets.part0 = [\x00]",
        "export": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
        "notes.gz": gzip.compress(b"one tweet per line\n" * 50),
    }
    paths = {name: tmp_path / name for name in files}
    for name, content in files.items():
        paths[name].write_bytes(content)
    paths["ls"] = Path(shutil.copy("/bin/ls", tmp_path / "ls"))
    paths["archive.zip"] = write_zip(tmp_path / "archive.zip", {"data/tweets.js": b"\x1f\x8b\x00"})
    return paths


BINARY_NAMES = [
    "tweets.txt", "nul.txt", "tweets.csv", "tweets.jsonl", "tweets.js", "export", "notes.gz",
    "ls", "archive.zip",
]  # fmt: skip


@pytest.mark.parametrize("name", BINARY_NAMES)
def test_cli_refuses_binary_input_in_every_format_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    config = write_config(tmp_path)
    good = tmp_path / "good.txt"
    good.write_text("a tweet that is already stored\n")
    assert main(["--config", str(config), "import", "fdgwhite", str(good)]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "data" / "fdgwhite").iterdir()}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = binary_inputs(inputs)[name]
    capsys.readouterr()

    status = main(["--config", str(config), "import", "fdgwhite", str(bad)])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.count("\n") == 1 and captured.err.startswith("tweetlike: error: ")
    assert NOT_TEXT in captured.err and "(byte 0x" in captured.err
    assert captured.out == ""
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "fdgwhite").iterdir()} == before


def not_an_import_file(kind: str, tmp_path: Path) -> Path:
    """A path of the given kind that ``tweetlike import`` must refuse by saying what it is."""
    target = tmp_path / kind
    if kind == "device":
        return Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(target))
    elif kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("not an archive")
    elif kind == "broken-link":
        target.symlink_to(tmp_path / "gone.zip")
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("device", "/dev/zero is a character device, not a file"),
        ("fifo", "fifo is a named pipe (FIFO), not a file"),
        ("socket", "socket is a socket, not a file"),
        ("folder", "folder is a folder without an X archive in it"),
        ("broken-link", "broken-link is a symbolic link to"),
        ("missing", "missing does not exist"),
    ],
)
def test_cli_says_what_a_path_that_is_not_an_import_file_is(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    message: str,
) -> None:
    config = write_config(tmp_path)
    target = not_an_import_file(kind, tmp_path)

    status = main(["--config", str(config), "import", "fdgwhite", str(target)])

    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "data").exists()


def test_a_folder_is_searched_one_level_down_only(tmp_path: Path, settings: Settings) -> None:
    tweets = ytd("tweets", [archive_tweet("3", "found one level down")])
    (tmp_path / "downloads" / "twitter-2024" / "data").mkdir(parents=True)
    (tmp_path / "downloads" / "twitter-2024" / "data" / "tweets.js").write_text(tweets)
    (tmp_path / "deep" / "a" / "b" / "data").mkdir(parents=True)
    (tmp_path / "deep" / "a" / "b" / "data" / "tweets.js").write_text(tweets)

    assert import_tweets(settings, "fdgwhite", tmp_path / "downloads").added == 1
    with pytest.raises(DataError, match="folder without an X archive"):
        import_tweets(settings, "other", tmp_path / "deep")


# -- tweets that cannot be posts: skipped and counted, never stored ------------------------

LONGEST = "a" * (MAX_TWEET_CHARS - 4) + " end"  # exactly the limit: kept
TOO_LONG = "b" * (MAX_TWEET_CHARS + 1)
INVISIBLE = "\u200b\u2060\x01"  # zero-width and control characters only


def unfit_files(tmp_path: Path) -> dict[str, Path]:
    """The same four tweets (two fit, one too long, one invisible) in every format."""
    texts = ["a perfectly normal tweet", LONGEST, TOO_LONG, INVISIBLE]
    items = [archive_tweet(str(10 + i), text) for i, text in enumerate(texts)]
    files: dict[str, str] = {
        "tweets.txt": "\n".join(texts) + "\n",
        "tweets.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
        "tweets.csv": "id,text\n" + "".join(f"{10 + i},{t}\n" for i, t in enumerate(texts)),
        "tweets.js": ytd("tweets", items),
    }
    paths = {name: tmp_path / name for name in files}
    for name, content in files.items():
        paths[name].write_text(content, encoding="utf-8")
    paths["archive.zip"] = write_zip(
        tmp_path / "archive.zip", {"data/tweets.js": files["tweets.js"]}
    )
    return paths


@pytest.mark.parametrize(
    "name", ["tweets.txt", "tweets.jsonl", "tweets.csv", "tweets.js", "archive.zip"]
)
def test_too_long_and_invisible_tweets_are_skipped_and_counted_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    config = write_config(tmp_path)
    path = unfit_files(tmp_path)[name]

    assert main(["--config", str(config), "import", "fdgwhite", str(path)]) == 0

    out = capsys.readouterr().out
    assert out == "fdgwhite: 2 new tweets, 2 stored; skipped 2: 1 too long, 1 empty\n"
    stored = TweetStore(tmp_path / "data").load("fdgwhite")
    assert sorted(t.text for t in stored) == sorted(["a perfectly normal tweet", LONGEST])


HUGE_LINE = "x" * (3 * input_files.MAX_LINE_BYTES)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tweets.txt", f"before\n{HUGE_LINE}\nafter\n"),
        ("tweets.jsonl", f'{{"text": "before"}}\n{{"text": "{HUGE_LINE}"}}\n{{"text": "after"}}\n'),
        ("tweets.csv", f"text\nbefore\n{HUGE_LINE}\nafter\n"),
        ("wide.csv", f"text\nbefore\n{'y' * 200_000}\nafter\n"),  # past csv's field limit
    ],
)
def test_a_line_too_long_to_be_a_tweet_is_skipped_and_the_rest_imported(
    tmp_path: Path, settings: Settings, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    result = import_tweets(settings, "fdgwhite", path)

    assert sorted(t.text for t in load(settings)) == ["after", "before"]
    assert (result.added, result.skipped.too_long) == (2, 1)


def test_a_file_of_only_unfit_tweets_holds_no_tweets(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "tweets.txt"
    path.write_text(f"{TOO_LONG}\n{INVISIBLE}\n")

    with pytest.raises(DataError, match=r"holds no tweets \(skipped 2: 1 too long, 1 empty\)"):
        import_tweets(settings, "fdgwhite", path)
    assert not settings.storage.data_dir.exists()


def test_a_file_larger_than_any_account_is_refused_before_reading(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "huge.txt"
    with open(path, "wb") as sparse:
        sparse.truncate(input_files.MAX_INPUT_BYTES + 1)

    with pytest.raises(DataError, match=r"huge\.txt is 512 MiB: too large"):
        import_tweets(settings, "fdgwhite", path)


def test_an_archive_member_larger_than_the_limit_is_refused(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tweets = ytd("tweets", [archive_tweet(str(i), "words " * 50) for i in range(1, 200)])
    archive = write_zip(tmp_path / "big.zip", {"data/tweets.js": tweets})
    monkeypatch.setattr(input_files, "MAX_INPUT_BYTES", len(tweets.encode()) - 1)

    with pytest.raises(DataError, match=r"big\.zip:data/tweets\.js is .*: too large"):
        import_tweets(settings, "fdgwhite", archive)
