"""Per-handle tweet storage under ``storage.data_dir``.

``<data_dir>/<handle>/tweets.jsonl`` holds every tweet ever fetched or imported, deduplicated
by id (never by text, as huggingtweets did), newest first. ``account.json`` records who the
account is and where its tweets came from, so a retrain knows whether to fetch first. Every
write goes to a temp file then ``os.replace``: a crash part-way leaves the old file intact.

Every source merges through here, so this is where :func:`bot.sources.tweets.keep_fit` keeps
text that cannot be a post (too long, nothing visible) out of the store.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from bot.errors import DataError
from bot.handles import normalize_handle
from bot.sources.tweets import Skipped, Tweet, id_key, keep_fit

SourceKind = Literal["x", "import"]


class AccountInfo(BaseModel):
    handle: str
    user_id: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    sources: list[SourceKind] = []
    newest_id: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class MergeResult:
    added: int
    total: int
    skipped: Skipped = field(default_factory=Skipped)


class TweetStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def folder(self, handle: str) -> Path:
        return self.data_dir / normalize_handle(handle)

    def load(self, handle: str) -> list[Tweet]:
        path = self.folder(handle) / "tweets.jsonl"
        if not path.is_file():
            return []
        tweets: list[Tweet] = []
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    tweets.append(Tweet(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise DataError(f"{path}:{number} is not a stored tweet ({exc})") from None
        return tweets

    def account(self, handle: str) -> AccountInfo | None:
        path = self.folder(handle) / "account.json"
        if not path.is_file():
            return None
        try:
            return AccountInfo.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise DataError(
                f"{path} is not a stored account record ({exc.error_count()} errors)"
            ) from None

    def newest_id(self, handle: str) -> str | None:
        account = self.account(handle)
        return account.newest_id if account else None

    def merge(
        self,
        handle: str,
        tweets: Iterable[Tweet],
        *,
        source: SourceKind,
        account: AccountInfo | None = None,
    ) -> MergeResult:
        """Add new tweets (by id) and record the source; returns how many were new and how
        many could not be tweets (those are never stored).

        The read-modify-write holds an exclusive lock on the handle's folder, so a scheduled
        fetch and a CLI import of the same account cannot drop each other's tweets.
        """
        handle = normalize_handle(handle)
        folder = self.folder(handle)
        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder / ".lock"):
            return self._merge_locked(handle, tweets, source=source, account=account)

    def _merge_locked(
        self,
        handle: str,
        tweets: Iterable[Tweet],
        *,
        source: SourceKind,
        account: AccountInfo | None,
    ) -> MergeResult:
        fit, skipped = keep_fit(tweets)
        existing = {t.id: t for t in self.load(handle)}
        before = len(existing)
        for tweet in fit:
            existing.setdefault(tweet.id, tweet)
        ordered = sorted(existing.values(), key=lambda t: id_key(t.id), reverse=True)
        previous = self.account(handle)  # read (and checked) before anything is written
        info = (account or previous or AccountInfo(handle=handle)).model_copy(deep=True)
        if previous is not None:
            info.sources = list(previous.sources)
            info.display_name = info.display_name or previous.display_name
            info.avatar_url = info.avatar_url or previous.avatar_url
            info.user_id = info.user_id or previous.user_id
        if source not in info.sources:
            info.sources.append(source)
        info.handle = handle
        info.newest_id = ordered[0].id if ordered else None
        info.updated_at = datetime.now(UTC).isoformat(timespec="seconds")

        folder = self.folder(handle)
        _atomic_write(
            folder / "tweets.jsonl",
            "".join(json.dumps(asdict(t), ensure_ascii=False) + "\n" for t in ordered),
        )
        _atomic_write(folder / "account.json", info.model_dump_json(indent=2))
        return MergeResult(added=len(existing) - before, total=len(existing), skipped=skipped)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
