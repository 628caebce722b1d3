"""``tweetlike import``: tweets from an X archive, a CSV, a JSONL or a plain text file.

The format comes from the extension (``.zip``, ``.js``, ``.csv``, ``.jsonl``/``.ndjson``,
``.txt``), and from the content when the extension says nothing (or for a folder, an
extracted archive). What may be read at all (regular files, UTF-8 text, bounded sizes) is
decided in :mod:`bot.sources.input_files`, the same for every format. Everything is read and
checked before the store is touched, so bad input raises :class:`DataError` and leaves the
account's stored data byte-identical. Text that cannot be a tweet (too long, nothing
visible) is skipped and counted in the summary (:func:`bot.sources.tweets.keep_fit`). Tweets
without an id get a synthetic one (:mod:`bot.sources.ids`), so re-importing a file adds
nothing.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import DataError
from bot.handles import check_not_blocked, normalize_handle
from bot.sources import input_files
from bot.sources.ids import synthetic_id
from bot.sources.input_files import TextLines, check_size, decode, kind_of, read_text
from bot.sources.results import SourceResult
from bot.sources.store import AccountInfo, TweetStore
from bot.sources.tweets import Skipped, Tweet, keep_fit

ARCHIVE_TWEET_FILE = re.compile(r"(?:^|/)data/tweets?(?:-part(\d+))?\.js$")
ARCHIVE_ACCOUNT_FILE = re.compile(r"(?:^|/)data/account\.js$")
_YTD_PREFIX = re.compile(r"^\s*window\.YTD\.\w+\.part\d+\s*=\s*")
_TWITTER_TIME = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"
# How the csv module refuses a field over csv.field_size_limit() (131,072 characters, far
# more than a tweet): that row is skipped as too long.
_CSV_FIELD_TOO_LARGE = "field larger than field limit"


@dataclass(frozen=True)
class ImportResult(SourceResult):
    path: Path | None = None
    format: str = ""


@dataclass(frozen=True)
class _Parsed:
    tweets: list[Tweet]
    account: AccountInfo | None = None
    skipped: Skipped = field(default_factory=Skipped)  # lines too long to parse
    blank: bool = False  # a text file with nothing but whitespace


def import_tweets(settings: Settings, handle: str, path: Path) -> ImportResult:
    """Read ``path`` completely, then merge its tweets into the handle's store."""
    handle = normalize_handle(handle)
    check_not_blocked([handle], settings.training.blocked_handles)
    fmt = detect_format(path)
    parsed = _READERS[fmt](path)
    if parsed.blank:
        raise DataError(f"{path} is empty")
    tweets, unfit = keep_fit(parsed.tweets)
    skipped = parsed.skipped + unfit
    if not tweets:
        why = f" ({skipped.describe()})" if skipped.total else ""
        raise DataError(f"{path} holds no tweets{why}")
    account = parsed.account.model_copy(update={"handle": handle}) if parsed.account else None
    store = TweetStore(settings.storage.data_dir)
    merged = store.merge(handle, tweets, source="import", account=account)
    return ImportResult(
        handle=handle,
        received=len(parsed.tweets) + parsed.skipped.total,
        added=merged.added,
        total=merged.total,
        skipped=skipped,
        path=path,
        format=fmt,
    )


def detect_format(path: Path) -> str:
    """``archive`` (zip), ``folder`` (extracted archive), ``ytd`` (tweets.js), ``csv``,
    ``jsonl`` or ``text``; raises DataError for what is not a file or folder, for binary
    content and for a bare JSON array."""
    if kind_of(path) == "folder":
        return "folder"
    by_extension = {
        ".zip": "archive",
        ".js": "ytd",
        ".csv": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".txt": "text",
    }
    known = by_extension.get(path.suffix.lower())
    if known:
        return known
    first = input_files.head(path)
    if first.startswith(b"PK\x03\x04"):
        return "archive"
    text = decode(first, str(path), final=len(first) < input_files.HEAD_BYTES).lstrip()
    if _YTD_PREFIX.match(text):
        return "ytd"
    if text.startswith("{"):
        return "jsonl"
    if text.startswith("["):
        raise DataError(
            f"{path} looks like a JSON array: use JSONL (one object with a 'text' field per "
            "line), CSV with a 'text' column, an X archive or plain text"
        )
    try:
        header = next(csv.reader(text.splitlines()[:1]), [])
    except csv.Error:
        return "text"
    if len(header) > 1 and "text" in {column.strip().lower() for column in header}:
        return "csv"
    return "text"


# -- X archive ---------------------------------------------------------------------------


def _read_zip(path: Path) -> _Parsed:
    try:
        with zipfile.ZipFile(path) as archive:

            def member(name: str) -> tuple[str, str]:
                where = f"{path}:{name}"
                check_size(archive.getinfo(name).file_size, where)
                return decode(archive.read(name), where), where

            names = archive.namelist()
            parts = _tweet_parts(names)
            if not parts:
                raise DataError(
                    f"{path} has no data/tweets.js: is it an X archive (Settings > Your account "
                    "> Download an archive of your data)?"
                )
            tweets = [tweet for name in parts for tweet in _ytd_tweets(*member(name))]
            account_file = next((n for n in names if ARCHIVE_ACCOUNT_FILE.search(n)), None)
            account = _ytd_account(*member(account_file)) if account_file else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable zip file ({exc})") from None
    return _Parsed(tweets, account)


def _read_folder(path: Path) -> _Parsed:
    """An extracted archive: ``data/`` in the folder or in one folder below it (never a walk
    of the whole tree, which for ``/`` would never end)."""
    found = [*path.glob("data/*.js"), *path.glob("*/data/*.js")]
    files = {p.relative_to(path).as_posix(): p for p in found if p.is_file()}
    parts = _tweet_parts(list(files))
    if not parts:
        raise DataError(
            f"{path} is a folder without an X archive in it (no data/tweets.js, in it or in a "
            "folder one level down)"
        )
    tweets = [t for name in parts for t in _ytd_tweets(read_text(files[name]), str(files[name]))]
    account_file = next((p for n, p in files.items() if ARCHIVE_ACCOUNT_FILE.search(n)), None)
    account = _ytd_account(read_text(account_file), str(account_file)) if account_file else None
    return _Parsed(tweets, account)


def _read_ytd_file(path: Path) -> _Parsed:
    return _Parsed(_ytd_tweets(read_text(path), str(path)))


def _tweet_parts(names: list[str]) -> list[str]:
    """The archive's tweet files in order: tweets.js (or tweet.js), then tweets-partN.js."""
    found = [(m, n) for n in names if (m := ARCHIVE_TWEET_FILE.search(n))]
    return [n for m, n in sorted(found, key=lambda mn: (int(mn[0].group(1) or 0), mn[1]))]


def _ytd_payload(text: str, where: str) -> list[Any]:
    match = _YTD_PREFIX.match(text.lstrip("\ufeff"))
    if not match:
        raise DataError(
            f"{where} is not an X archive file (expected 'window.YTD.tweets.part0 = [ ... ]')"
        )
    body = text.lstrip("\ufeff")[match.end() :].strip().rstrip(";")
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where} is not valid archive JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(payload, list):
        raise DataError(f"{where}: expected a list after 'window.YTD... =', got {_kind(payload)}")
    return payload


def _ytd_tweets(text: str, where: str) -> list[Tweet]:
    tweets = []
    for number, item in enumerate(_ytd_payload(text, where), 1):
        # Archives since 2020 wrap each tweet in {"tweet": {...}}; older ones do not.
        record = item.get("tweet", item) if isinstance(item, dict) else None
        if not isinstance(record, dict):
            raise DataError(f"{where}: item {number} is {_kind(item)}, not a tweet")
        tweet_id = str(record.get("id_str") or record.get("id") or "")
        text_value = record.get("full_text", record.get("text"))
        if not tweet_id.isdecimal():
            raise DataError(f"{where}: item {number} has no numeric id_str")
        if not isinstance(text_value, str):
            raise DataError(f"{where}: item {number} has no full_text")
        tweets.append(
            Tweet(
                id=tweet_id,
                text=text_value,
                created_at=_timestamp(record.get("created_at"), f"{where}: item {number}"),
                is_retweet=text_value.startswith("RT @"),
            )
        )
    return tweets


def _ytd_account(text: str, where: str) -> AccountInfo | None:
    payload = _ytd_payload(text, where)
    account = payload[0].get("account") if payload and isinstance(payload[0], dict) else None
    if not isinstance(account, dict):
        return None
    return AccountInfo(
        handle=str(account.get("username") or "unknown"),
        user_id=str(account["accountId"]) if account.get("accountId") else None,
        display_name=account.get("accountDisplayName") or None,
    )


# -- CSV, JSONL, plain text -------------------------------------------------------------


def _read_csv(path: Path) -> _Parsed:
    lines = TextLines(path)
    reader = csv.DictReader(line for line in lines if line is not None)
    rows: list[tuple[int, dict[str | Any, Any]]] = []
    too_long = 0
    try:
        columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        if "text" not in columns:
            if not any(columns):  # a blank first line: maybe nothing but whitespace follows
                for _ in reader:
                    if not lines.blank:
                        break
            if lines.blank:
                return _Parsed([], blank=True)
            shown = ", ".join(repr(c) for c in columns) or "none"
            raise DataError(f"{path} has no 'text' column (columns: {shown})")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if not str(exc).startswith(_CSV_FIELD_TOO_LARGE):
                    raise
                too_long += 1  # the parser resumes at the next line
                continue
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV ({exc})") from None
    records = (
        (line, {key: row.get(original) for key, original in columns.items()}) for line, row in rows
    )
    return _Parsed(
        _records_to_tweets(records, path), skipped=Skipped(too_long=lines.too_long + too_long)
    )


def _read_jsonl(path: Path) -> _Parsed:
    lines = TextLines(path)

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(lines, 1):
            if line is None or not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path}:{number} is not an object with a 'text' string")
            yield number, record

    tweets = _records_to_tweets(records(), path)
    return _Parsed(tweets, skipped=Skipped(too_long=lines.too_long), blank=lines.blank)


def _read_plain(path: Path) -> _Parsed:
    """One tweet per line, numbered as ``str.splitlines`` numbers them (synthetic ids depend
    on it); a line too long to read keeps its number."""
    lines = TextLines(path)

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        number = 0
        for line in lines:
            for part in [None] if line is None else line.splitlines():
                number += 1
                if part is not None and part.strip():
                    yield number, {"text": part.strip()}

    tweets = _records_to_tweets(records(), path)
    return _Parsed(tweets, skipped=Skipped(too_long=lines.too_long), blank=lines.blank)


def _records_to_tweets(records: Iterator[tuple[int, dict[str, Any]]], path: Path) -> list[Tweet]:
    """Tweets from rows with ``text`` and optional ``id``, ``created_at``, ``is_retweet``; a
    row without text becomes an empty tweet, for :func:`keep_fit` to count."""
    tweets = []
    for line, record in records:
        text = record.get("text")
        text = text if isinstance(text, str) else ""
        raw_id = record.get("id")
        tweet_id = str(raw_id).strip() if raw_id not in (None, "") else synthetic_id(text, line)
        if not tweet_id.isdecimal():
            raise DataError(f"{path}:{line}: id {raw_id!r} is not a numeric tweet id")
        retweet = record.get("is_retweet")
        tweets.append(
            Tweet(
                id=tweet_id,
                text=text,
                created_at=_timestamp(record.get("created_at"), f"{path}:{line}"),
                is_retweet=retweet if isinstance(retweet, bool) else text.startswith("RT @"),
            )
        )
    return tweets


# -- shared ------------------------------------------------------------------------------


def _timestamp(value: Any, where: str) -> str | None:
    """ISO 8601 from an archive's "Wed Oct 10 20:19:24 +0000 2018" or an ISO string."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    for parse in (lambda s: datetime.strptime(s, _TWITTER_TIME), datetime.fromisoformat):
        try:
            return parse(text).isoformat()
        except ValueError:
            continue
    raise DataError(f"{where}: created_at {text!r} is not a date (use ISO 8601)")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(
        type(value), type(value).__name__
    )


_READERS: dict[str, Callable[[Path], _Parsed]] = {
    "archive": _read_zip,
    "folder": _read_folder,
    "ytd": _read_ytd_file,
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "text": _read_plain,
}
