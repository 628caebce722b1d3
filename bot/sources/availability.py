"""Can an account's tweets be had? The one rule the service core and the training queue share.

A training needs tweets. They come from the tweet store (imported or fetched earlier) or
from the X API, which needs ``x.bearer_token``. When neither can provide them, a request to
train is refused at once, saying how to get data, rather than queued to fail a minute later
(and after promising the requester a ping).
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.config import Settings
from bot.errors import DataError
from bot.handles import normalize_handle
from bot.sources.store import TweetStore


def without_tweets(settings: Settings, handles: Iterable[str]) -> list[str]:
    """The handles for which no source can provide tweets (empty when all can)."""
    if settings.x.can_read:
        return []
    store = TweetStore(settings.storage.data_dir)
    missing = []
    for handle in handles:
        account = store.account(handle)
        if account is None or account.newest_id is None:
            missing.append(normalize_handle(handle))
    return missing


def check_tweets_available(settings: Settings, handles: Iterable[str]) -> None:
    """Raise DataError, saying how to get tweets, when some handle has no possible source."""
    missing = without_tweets(settings, handles)
    if not missing:
        return
    labels = " and ".join(f"@{h}" for h in missing)
    imports = " and ".join(f"`tweetlike import {h} PATH`" for h in missing)
    raise DataError(
        f"There are no tweets for {labels}, and no way to download them. An operator can "
        f"import an X archive ({imports}) or set x.bearer_token so tweets are fetched from X."
    )
