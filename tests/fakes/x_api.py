"""A fake X API v2 on 127.0.0.1 that real tweepy talks to through ``x.api_base_url``.

It runs an aiohttp server on its own event loop in a background thread, so synchronous code
(tweepy) and asyncio tests can both use it. Routes, JSON shapes, headers and error bodies
follow the real API closely enough for tweepy to parse them:

- ``GET /2/users/by/username/:username`` (``user.fields``)
- ``GET /2/users/:id/tweets`` (``max_results`` 5-100, ``pagination_token``, ``since_id``,
  ``until_id``, ``tweet.fields``; ``meta`` with ``result_count``, ``newest_id``,
  ``oldest_id``, ``next_token``; only the newest 3,200 tweets are reachable)
- ``POST /2/tweets`` (OAuth 1.0a user context only)

Missing, suspended and protected accounts answer 200 with an ``errors`` list, as X does.
Failures are injected with :meth:`FakeXApi.fail_next`; with :attr:`FakeXApi.echo_authorization`
set, every error reply quotes the request's ``Authorization`` header back, as a careless
proxy or debug server would. Every request is logged in :attr:`FakeXApi.requests`; posted
tweets land in :attr:`FakeXApi.posted`, with the accounts X would notify as
:attr:`FakeTweet.mentions` (found the way twitter-text finds them) and the length checked as
X weighs it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import pytest
from aiohttp import web

Route = Literal["user", "timeline", "post"]

BEARER_TOKEN = "fake-bearer-token"
CONSUMER_KEY = "fake-consumer-key"
CONSUMER_SECRET = "fake-consumer-secret"
ACCESS_TOKEN = "fake-access-token"
ACCESS_TOKEN_SECRET = "fake-access-token-secret"

TWEPOCH_MS = 1288834974657  # X's snowflake epoch
TIMELINE_CAP = 3200
_START_MS = 1672531200000  # 2023-01-01T00:00:00Z: the first fake tweet
_PROBLEMS = "https://api.twitter.com/2/problems/"
# twitter-text's validMentionOrList: a preceding character that allows a mention, an at sign
# (ASCII or full-width), then a screen name.
_MENTION = re.compile(
    r"(?:^|[^a-zA-Z0-9_!#$%&*@＠]|(?:^|[^a-zA-Z0-9_+~.-])(?:rt|RT|rT|Rt):?)[@＠]([a-zA-Z0-9_]{1,20})"
)
_END_MENTION = re.compile(r"^(?:[@＠]|[À-ÖØ-öø-ÿ]|://)")
# twitter-text configuration v3: these code points weigh 1, every other one 2; 280 in all.
_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
POST_LIMIT = 280
_OAUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
_JSON_BODY = web.RequestKey("json_body", object)

_STATUS_BODIES: dict[int, dict[str, Any]] = {
    400: {
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": _PROBLEMS + "invalid-request",
    },
    401: {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"},
    403: {
        "title": "Client Forbidden",
        "detail": "This request must be made using an approved developer account that is "
        "enrolled in the requested endpoint.",
        "reason": "client-not-enrolled",
        "type": _PROBLEMS + "client-forbidden",
    },
    429: {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    },
    500: {
        "title": "Internal Server Error",
        "detail": "Internal Server Error",
        "type": "about:blank",
        "status": 500,
    },
    503: {
        "title": "Service Unavailable",
        "detail": "Service Unavailable",
        "type": "about:blank",
        "status": 503,
    },
}


def snowflake(ms: int, sequence: int = 0) -> str:
    return str(((ms - TWEPOCH_MS) << 22) | sequence)


def snowflake_time(tweet_id: str) -> str:
    ms = (int(tweet_id) >> 22) + TWEPOCH_MS
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class FakeUser:
    id: str
    username: str
    name: str
    profile_image_url: str
    protected: bool = False
    suspended: bool = False
    tweets: list[FakeTweet] = field(default_factory=list)

    def as_json(self, fields: set[str]) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "username": self.username}
        if "profile_image_url" in fields:
            data["profile_image_url"] = self.profile_image_url
        if "protected" in fields:
            data["protected"] = self.protected
        if "public_metrics" in fields:
            data["public_metrics"] = {
                "followers_count": 10,
                "following_count": 10,
                "tweet_count": len(self.tweets),
                "listed_count": 0,
            }
        return data


@dataclass
class FakeTweet:
    id: str
    text: str
    author_id: str
    referenced_tweets: list[dict[str, str]] = field(default_factory=list)
    in_reply_to_user_id: str | None = None
    mentions: list[str] = field(default_factory=list)

    def as_json(self, fields: set[str]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "edit_history_tweet_ids": [self.id],
        }
        if "created_at" in fields:
            data["created_at"] = snowflake_time(self.id)
        if "author_id" in fields:
            data["author_id"] = self.author_id
        if "referenced_tweets" in fields and self.referenced_tweets:
            data["referenced_tweets"] = self.referenced_tweets
        if "in_reply_to_user_id" in fields and self.in_reply_to_user_id:
            data["in_reply_to_user_id"] = self.in_reply_to_user_id
        return data


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    route: Route | None
    query: dict[str, str]
    authorization: str | None
    body: dict[str, Any] | None
    at: float


@dataclass
class _Fault:
    status: int
    route: Route | None
    skip: int
    times: int
    reset_in: float


class FakeXApi:
    """``with FakeXApi() as fake:`` serves on ``fake.base_url`` until the block ends."""

    def __init__(
        self,
        *,
        bearer_token: str = BEARER_TOKEN,
        consumer_key: str = CONSUMER_KEY,
        access_token: str = ACCESS_TOKEN,
    ) -> None:
        self.bearer_token = bearer_token
        self.consumer_key = consumer_key
        self.access_token = access_token
        self.echo_authorization = False
        self.base_url = ""
        self._lock = threading.Lock()
        self._users: dict[str, FakeUser] = {}
        self._tweets: dict[str, FakeTweet] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._posted: list[FakeTweet] = []
        self._clock_ms = _START_MS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeXApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-x-api", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/2/users/by/username/{username}", self._get_user)
        app.router.add_get("/2/users/{id}/tweets", self._get_timeline)
        app.router.add_post("/2/tweets", self._post_tweet)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    # -- test set-up -----------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        profile_image_url: str | None = None,
        protected: bool = False,
        suspended: bool = False,
    ) -> FakeUser:
        with self._lock:
            user = FakeUser(
                id=user_id or str(1000 + len(self._users)),
                username=username,
                name=name or username.title(),
                profile_image_url=profile_image_url
                or f"https://pbs.twimg.com/profile_images/{username}_normal.jpg",
                protected=protected,
                suspended=suspended,
            )
            self._users[username.lower()] = user
            return user

    def add_tweet(
        self,
        username: str,
        text: str,
        *,
        referenced_tweets: list[dict[str, str]] | None = None,
        in_reply_to_user_id: str | None = None,
    ) -> FakeTweet:
        """A new tweet, newer than every tweet added before it (ids are snowflakes)."""
        with self._lock:
            return self._add_tweet(
                self._users[username.lower()], text, referenced_tweets or [], in_reply_to_user_id
            )

    def add_tweets(self, username: str, count: int, *, prefix: str = "tweet") -> list[FakeTweet]:
        return [self.add_tweet(username, f"{prefix} number {i} of {count}") for i in range(count)]

    def add_retweet(self, username: str, original: FakeTweet, original_author: str) -> FakeTweet:
        return self.add_tweet(
            username,
            f"RT @{original_author}: {original.text}",
            referenced_tweets=[{"type": "retweeted", "id": original.id}],
        )

    def add_reply(self, username: str, text: str, to: FakeTweet) -> FakeTweet:
        return self.add_tweet(
            username,
            text,
            referenced_tweets=[{"type": "replied_to", "id": to.id}],
            in_reply_to_user_id=to.author_id,
        )

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        after: int = 0,
        route: Route | None = None,
        reset_in: float = 1.0,
    ) -> None:
        """Answer ``status`` to ``times`` requests (of ``route``, if given) after ``after`` more.

        A 429 carries ``x-rate-limit-reset`` ``reset_in`` seconds ahead, as X sends it.
        E.g. a 500 on the third timeline page: ``fail_next(500, route="timeline", after=2)``.
        """
        with self._lock:
            self._faults.append(_Fault(status, route, after, times, reset_in))

    # -- what the fake saw -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, route: Route) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    @property
    def posted(self) -> list[FakeTweet]:
        with self._lock:
            return list(self._posted)

    # -- server side -----------------------------------------------------------------------

    def _add_tweet(
        self,
        user: FakeUser,
        text: str,
        referenced: list[dict[str, str]],
        in_reply_to_user_id: str | None,
    ) -> FakeTweet:
        self._clock_ms += 1000
        tweet = FakeTweet(
            id=snowflake(self._clock_ms),
            text=text,
            author_id=user.id,
            referenced_tweets=referenced,
            in_reply_to_user_id=in_reply_to_user_id,
        )
        user.tweets.append(tweet)
        self._tweets[tweet.id] = tweet
        return tweet

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = _route_of(request)
        body = request[_JSON_BODY] = await _json_body(request)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    route=route,
                    query=dict(request.query),
                    authorization=request.headers.get("Authorization"),
                    body=body,
                    at=time.time(),
                )
            )
            fault = self._take_fault(route)
        echo = self._echo(request)
        if fault is not None:
            return _problem(fault.status, reset_in=fault.reset_in, **echo)
        auth = self._authenticate(request.headers.get("Authorization", ""))
        if auth is None:
            return _problem(401, **echo)
        if route == "post" and auth != "user":
            unsupported = {
                "title": "Unsupported Authentication",
                "detail": "Authenticating with OAuth 2.0 Application-Only is forbidden for this "
                "endpoint.  Supported authentication types are [OAuth 1.0a User Context, "
                "OAuth 2.0 User Context].",
                "type": _PROBLEMS + "unsupported-authentication",
            }
            return _problem(403, **{**unsupported, **echo})
        if route is None:
            return web.json_response(
                {"errors": [{"message": "Sorry, that page does not exist", "code": 34}]},
                status=404,
            )
        response = await handler(request)
        response.headers.update(_rate_headers())
        return response

    def _echo(self, request: web.Request) -> dict[str, str]:
        """The error detail that quotes the request's credentials, when asked to."""
        if not self.echo_authorization:
            return {}
        return {"detail": f"echo {request.headers.get('Authorization', '')}"}

    def _take_fault(self, route: Route | None) -> _Fault | None:
        for fault in self._faults:
            if fault.route is not None and fault.route != route:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _authenticate(self, header: str) -> Literal["app", "user"] | None:
        if header == f"Bearer {self.bearer_token}":
            return "app"
        if header.startswith("OAuth "):
            params = {k: unquote(v) for k, v in _OAUTH_PARAM.findall(header)}
            if (
                params.get("oauth_consumer_key") == self.consumer_key
                and params.get("oauth_token") == self.access_token
                and params.get("oauth_signature")
            ):
                return "user"
        return None

    async def _get_user(self, request: web.Request) -> web.Response:
        username = request.match_info["username"]
        fields = _fields(request, "user.fields")
        with self._lock:
            user = self._users.get(username.lower())
            if user is None:
                return _resource_errors(
                    username, "username", "Not Found Error", "resource-not-found",
                    f"Could not find user with username: [{username}].",
                )  # fmt: skip
            if user.suspended:
                return _resource_errors(
                    username, "username", "Forbidden", "resource-not-found",
                    f"User has been suspended: [{username}].",
                )  # fmt: skip
            return web.json_response({"data": user.as_json(fields)})

    async def _get_timeline(self, request: web.Request) -> web.Response:
        user_id = request.match_info["id"]
        query = request.query
        max_results = query.get("max_results", "10")
        if not max_results.isdecimal() or not 5 <= int(max_results) <= 100:
            return _invalid_parameter(
                "max_results",
                max_results,
                f"The `max_results` query parameter value [{max_results}] is not between 5 and 100",
            )
        token = query.get("pagination_token")
        start_id = _decode_token(token) if token else None
        if token and start_id is None:
            return _invalid_parameter(
                "pagination_token",
                token,
                f"The `pagination_token` query parameter value [{token}] is not valid",
            )
        for name in ("since_id", "until_id"):
            if name in query and not query[name].isdecimal():
                return _invalid_parameter(
                    name, query[name], f"The `{name}` query parameter value [{query[name]}] "
                    "does not match ^[0-9]{1,19}$",
                )  # fmt: skip
        fields = _fields(request, "tweet.fields")
        with self._lock:
            user = next((u for u in self._users.values() if u.id == user_id), None)
            if user is None:
                return _resource_errors(
                    user_id, "id", "Not Found Error", "resource-not-found",
                    f"Could not find user with id: [{user_id}].",
                )  # fmt: skip
            if user.suspended:
                return _resource_errors(
                    user_id, "id", "Forbidden", "resource-not-found",
                    f"User has been suspended: [{user_id}].",
                )  # fmt: skip
            if user.protected:
                return _resource_errors(
                    user_id, "id", "Authorization Error", "not-authorized-for-resource",
                    f"Sorry, you are not authorized to see the user with id: [{user_id}].",
                )  # fmt: skip
            newest_first = sorted(user.tweets, key=lambda t: int(t.id), reverse=True)
            window = newest_first[:TIMELINE_CAP]
        since = int(query.get("since_id", "0"))
        until = int(query["until_id"]) if "until_id" in query else None
        matching = [
            t
            for t in window
            if int(t.id) > since
            and (until is None or int(t.id) < until)
            and (start_id is None or int(t.id) <= start_id)
        ]
        page = matching[: int(max_results)]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta["newest_id"] = page[0].id
            meta["oldest_id"] = page[-1].id
        if len(matching) > len(page):
            meta["next_token"] = _encode_token(int(matching[len(page)].id))
        if token and page:
            meta["previous_token"] = _encode_token(int(page[0].id) + 1)
        body: dict[str, Any] = {"meta": meta}
        if page:
            body = {"data": [t.as_json(fields) for t in page], "meta": meta}
        return web.json_response(body)

    async def _post_tweet(self, request: web.Request) -> web.Response:
        payload = request[_JSON_BODY]
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _problem(
                400,
                errors=[{"message": "$.text: text is required when media is not present"}],
            )
        if weighted_length(text) > POST_LIMIT:
            return _problem(403, title="Forbidden", detail="Your Tweet text is too long.")
        with self._lock:
            if any(t.text == text for t in self._posted):
                return _problem(
                    403,
                    title="Forbidden",
                    detail="You are not allowed to create a Tweet with duplicate content.",
                    type="about:blank",
                )
            self._clock_ms += 1000
            tweet = FakeTweet(
                id=snowflake(self._clock_ms), text=text, author_id="0", mentions=mentions(text)
            )
            self._posted.append(tweet)
        return web.json_response(
            {"data": {"id": tweet.id, "text": text, "edit_history_tweet_ids": [tweet.id]}},
            status=201,
        )


def mentions(text: str) -> list[str]:
    """The screen names X would notify for ``text`` (twitter-text's extractMentions)."""
    names = []
    for match in _MENTION.finditer(text):
        if not _END_MENTION.match(text[match.end() :]):
            names.append(match[1])
    return names


def weighted_length(text: str) -> int:
    """The length X counts for ``text`` (before URLs, which this fake never shortens)."""
    normal = unicodedata.normalize("NFC", text)
    return sum(1 if any(a <= ord(c) <= b for a, b in _LIGHT) else 2 for c in normal)


def _route_of(request: web.Request) -> Route | None:
    path = request.path
    if request.method == "GET" and path.startswith("/2/users/by/username/"):
        return "user"
    if request.method == "GET" and re.fullmatch(r"/2/users/\d+/tweets", path):
        return "timeline"
    if request.method == "POST" and path == "/2/tweets":
        return "post"
    return None


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None


def _fields(request: web.Request, name: str) -> set[str]:
    return {f for f in request.query.get(name, "").split(",") if f}


def _encode_token(tweet_id: int) -> str:
    return base64.b32encode(tweet_id.to_bytes(8, "big")).decode().rstrip("=").lower()


def _decode_token(token: str) -> int | None:
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except ValueError:
        return None
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


def _rate_headers(remaining: int = 899, reset_in: float = 900) -> dict[str, str]:
    return {
        "x-rate-limit-limit": "900",
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(int(time.time() + reset_in)),
    }


def _problem(status: int, *, reset_in: float = 0, **body: Any) -> web.Response:
    content = {**_STATUS_BODIES.get(status, {"title": "Error", "type": "about:blank"}), **body}
    headers = _rate_headers(0, reset_in) if status == 429 else {}
    return web.json_response(content, status=status, headers=headers)


def _resource_errors(
    value: str, parameter: str, title: str, kind: str, detail: str
) -> web.Response:
    return web.json_response(
        {
            "errors": [
                {
                    "value": value,
                    "detail": detail,
                    "title": title,
                    "resource_type": "user",
                    "parameter": parameter,
                    "resource_id": value,
                    "type": _PROBLEMS + kind,
                }
            ]
        }
    )


def _invalid_parameter(name: str, value: str, message: str) -> web.Response:
    return _problem(400, errors=[{"parameters": {name: [value]}, "message": message}])


@pytest.fixture
def fake_x() -> Iterator[FakeXApi]:
    """A started fake X API; point ``x.api_base_url`` at ``fake_x.base_url``."""
    with FakeXApi() as fake:
        yield fake
