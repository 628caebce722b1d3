"""The X API v2 through tweepy: download an account's timeline, post a tweet.

tweepy hard-codes ``https://api.twitter.com``; ``x.api_base_url`` (a proxy, or the local
fake the tests run) is honoured by a transport adapter mounted on the client's requests
session that re-addresses each request, so tweepy's own code runs unchanged. The adapter
also gives every request a timeout, which requests lacks by default.

A fetch is all-or-nothing: the timeline arrives newest first, so keeping the first pages of
a download that failed part-way would move the stored newest id forward and the next fetch
(``since_id``) would skip the older tweets that never arrived. The store is written once,
atomically, after the last page.

Text from X's replies (error details, reasons) reaches users inside our messages, so it
passes :func:`_reply_text` first: one line, bounded, and with any ``Authorization`` header
value a server echoed replaced, even in a form the secret redactor cannot recognise (the
OAuth header percent-encodes the keys). Configured secrets are redacted again wherever a
message is shown (:mod:`bot.redaction`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import requests
import tweepy
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from bot.config import Settings
from bot.errors import SourceError
from bot.handles import check_not_blocked, normalize_handle
from bot.redaction import REDACTED
from bot.sources.ids import newest_real_id
from bot.sources.results import SourceResult
from bot.sources.store import AccountInfo, TweetStore
from bot.sources.tweets import Tweet
from bot.sources.x_text import post_text

log = logging.getLogger(__name__)

TWEEPY_HOST = "https://api.twitter.com"
REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
PAGE_SIZE = 100  # the API's maximum max_results for a user timeline
MIN_PAGE_SIZE = 5  # ... and its minimum

_READ_KEYS = ("bearer_token",)
_POST_KEYS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")

_FetchError = (tweepy.TweepyException, requests.RequestException)
# An Authorization header value: "Bearer <token>" or "OAuth k1="v1", k2="v2", ...".
_AUTHORIZATION = re.compile(
    r"\b(Bearer)\s+[\w\-.~+/%=]+|\b(OAuth)\s+\w+=\"[^\"]*\"(?:\s*,\s*\w+=\"[^\"]*\")*",
    re.IGNORECASE,
)
MAX_REPLY_TEXT = 300  # characters of X's own wording kept in one of our messages


@dataclass(frozen=True)
class FetchResult(SourceResult):
    since_id: str | None = None


class _ApiBaseAdapter(HTTPAdapter):
    """Sends what tweepy addresses to api.twitter.com to the configured base URL instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._base_url = base_url.rstrip("/")

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        if self._base_url != TWEEPY_HOST and url.startswith(TWEEPY_HOST + "/"):
            request.url = self._base_url + url[len(TWEEPY_HOST) :]
            # The session chose proxies for api.twitter.com; choose again for the real target.
            proxies = get_environ_proxies(request.url)
        return super().send(
            request,
            stream=stream,
            timeout=timeout or REQUEST_TIMEOUT,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def x_client(settings: Settings, *, user_context: bool = False) -> tweepy.Client:
    """A tweepy client: app-only bearer token to read, OAuth 1.0a user context to post.

    It waits out rate limits (429) until the ``x-rate-limit-reset`` time, then retries.
    """
    x = settings.x
    needed = _POST_KEYS if user_context else _READ_KEYS
    missing = [key for key in needed if not getattr(x, key).get_secret_value()]
    if missing:
        what = "posting to X" if user_context else "reading from the X API"
        keys = ", ".join(f"x.{key}" for key in missing)
        env = ", ".join(f"TWEETLIKE_X__{key.upper()}" for key in missing)
        raise SourceError(f"{what} needs {keys} in the config (or {env} in the environment)")
    if user_context:
        client = tweepy.Client(
            consumer_key=x.consumer_key.get_secret_value(),
            consumer_secret=x.consumer_secret.get_secret_value(),
            access_token=x.access_token.get_secret_value(),
            access_token_secret=x.access_token_secret.get_secret_value(),
            wait_on_rate_limit=True,
        )
    else:
        client = tweepy.Client(
            bearer_token=x.bearer_token.get_secret_value(), wait_on_rate_limit=True
        )
    client.session.mount(TWEEPY_HOST + "/", _ApiBaseAdapter(x.api_base_url))
    return client


def fetch_tweets(
    settings: Settings,
    handle: str,
    *,
    on_progress: Callable[[float], None] | None = None,
) -> FetchResult:
    """Download the account's timeline (replies included) into the tweet store.

    Only tweets newer than the newest stored real id are requested. ``on_progress`` gets a
    fraction in [0, 1] after each page; it is an estimate until the final 1.0.
    """
    handle = normalize_handle(handle)
    check_not_blocked([handle], settings.training.blocked_handles)
    store = TweetStore(settings.storage.data_dir)
    since_id = newest_real_id(store.load(handle))
    client = x_client(settings)
    try:
        user = _resolve_user(client, handle)
    except _FetchError as exc:
        raise SourceError(f"cannot look up @{handle} on X: {_describe(exc, settings)}") from None

    download = _TimelineDownload(client, user, since_id, settings.x.max_tweets, on_progress)
    try:
        download.run()
    except _FetchError as exc:
        raise SourceError(
            f"downloading @{handle}'s tweets failed after {len(download.tweets):,} tweets "
            f"({download.pages} {'page' if download.pages == 1 else 'pages'} received): "
            f"{_describe(exc, settings)}; "
            "nothing new was stored, run fetch again"
        ) from None

    account = AccountInfo(
        handle=handle,
        user_id=str(user.id),
        display_name=user.name,
        avatar_url=user.profile_image_url,
    )
    merged = store.merge(handle, download.tweets, source="x", account=account)
    if on_progress is not None:
        on_progress(1.0)
    log.debug("@%s: %d tweets received, %d new", handle, len(download.tweets), merged.added)
    return FetchResult(
        handle=handle,
        received=len(download.tweets),
        added=merged.added,
        total=merged.total,
        skipped=merged.skipped,
        since_id=since_id,
    )


def post_tweet(settings: Settings, text: str) -> str:
    """Post ``text`` as the configured user, made safe for X (:func:`post_text`: labelled,
    mentions neutralised, cut at a word to fit); returns the new post's id."""
    client = x_client(settings, user_context=True)
    try:
        response = client.create_tweet(text=post_text(text, settings.x.post_label), user_auth=True)
    except _FetchError as exc:
        keys = "x." + ", x.".join(_POST_KEYS)
        raise SourceError(f"posting to X failed: {_describe(exc, settings, keys)}") from None
    return str(response.data["id"])


def _resolve_user(client: tweepy.Client, handle: str) -> tweepy.User:
    response = client.get_user(
        username=handle, user_fields=["name", "profile_image_url", "protected", "public_metrics"]
    )
    user = response.data
    if user is None:
        raise SourceError(_account_problem(handle, response.errors))
    if user.protected:
        raise SourceError(f"@{handle}'s tweets are protected; only public accounts can be fetched")
    return user


def _account_problem(handle: str, errors: list[dict[str, object]]) -> str:
    """One line for the errors X returns with status 200 about a missing or hidden account."""
    detail = _reply_text(" ".join(str(e.get("detail") or e.get("message") or "") for e in errors))
    kinds = {str(e.get("type", "")).rsplit("/", 1)[-1] for e in errors}
    if "suspended" in detail.lower():
        return f"@{handle} is suspended on X"
    if "not-authorized-for-resource" in kinds:
        return f"@{handle}'s tweets are protected; only public accounts can be fetched"
    if "resource-not-found" in kinds:
        return f"@{handle} does not exist on X (check the spelling, or it was renamed)"
    return f"X API could not serve @{handle}: {detail or 'no data and no reason given'}"


class _TimelineDownload:
    """Pages through the user timeline, remembering how far it got if a page fails."""

    def __init__(
        self,
        client: tweepy.Client,
        user: tweepy.User,
        since_id: str | None,
        limit: int,
        on_progress: Callable[[float], None] | None,
    ) -> None:
        self.client = client
        self.user = user
        self.since_id = since_id
        self.limit = limit
        self.on_progress = on_progress
        self.tweets: list[Tweet] = []
        self.pages = 0
        metrics = user.public_metrics or {}
        self.expected = min(limit, int(metrics.get("tweet_count") or limit)) or limit

    def run(self) -> None:
        paginator = tweepy.Paginator(
            self.client.get_users_tweets,
            self.user.id,
            max_results=max(MIN_PAGE_SIZE, min(PAGE_SIZE, self.limit)),
            tweet_fields=["created_at", "referenced_tweets"],
            since_id=self.since_id,
        )
        for response in paginator:
            if response.data is None and response.errors:
                raise SourceError(_account_problem(self.user.username, response.errors))
            self.pages += 1
            for item in response.data or []:
                self.tweets.append(_to_tweet(item))
                if len(self.tweets) >= self.limit:
                    return
            if self.on_progress is not None:
                self.on_progress(min(len(self.tweets) / self.expected, 0.99))


def _to_tweet(item: tweepy.Tweet) -> Tweet:
    referenced = item.referenced_tweets or []
    retweeted = any(ref.type == "retweeted" for ref in referenced)
    return Tweet(
        id=str(item.id),
        text=item.text,
        created_at=item.created_at.isoformat() if item.created_at else None,
        is_retweet=retweeted or item.text.startswith("RT @"),
    )


def _describe(exc: BaseException, settings: Settings, credentials: str = "x.bearer_token") -> str:
    """One line for a failed request; says which setting to check when that is the cause."""
    if isinstance(exc, tweepy.HTTPException):
        status = exc.response.status_code
        reason = _reply_text(f"{status} {exc.response.reason}")
        given = exc.response.reason
        messages = _reply_text("; ".join(str(m) for m in exc.api_messages if m and m != given))
        text = f"{reason} ({messages})" if messages else reason
        if isinstance(exc, tweepy.Unauthorized):
            return f"X rejected the credentials, {text}: check {credentials}"
        if isinstance(exc, tweepy.Forbidden):
            return f"X refused access, {text}"
        return f"X API error {text}"
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the X API at {settings.x.api_base_url} ({type(exc).__name__})"
    return _reply_text(str(exc))


def _reply_text(text: str) -> str:
    """Text from an X reply, fit to quote in a one-line message (see the module docstring)."""
    text = " ".join(_AUTHORIZATION.sub(lambda m: f"{m[1] or m[2]} {REDACTED}", text).split())
    return text if len(text) <= MAX_REPLY_TEXT else text[: MAX_REPLY_TEXT - 1] + "…"
