"""What the bot sent back to a FakeDiscord, kept in order so tests can wait on it and assert."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fakes import WAIT_SECONDS

T = TypeVar("T")

INTERACTION_TYPE_COMMAND = 2
INTERACTION_TYPE_COMPONENT = 3
INTERACTION_TYPE_AUTOCOMPLETE = 4

CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE = 8
CALLBACK_MODAL = 9

ALLOWED_CALLBACKS = {
    INTERACTION_TYPE_COMMAND: {CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_MODAL},
    INTERACTION_TYPE_COMPONENT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE_MESSAGE,
        CALLBACK_MODAL,
    },
    INTERACTION_TYPE_AUTOCOMPLETE: {CALLBACK_AUTOCOMPLETE},
}


class ChangeSignal:
    """Wakes every waiter whenever the fake records something; waiters re-check their condition.

    One shared signal keeps the waiting helpers event-driven without a condition per query.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            async with asyncio.timeout(timeout):
                while (found := probe()) is None:
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
        return found


@dataclass
class InteractionEvent:
    """One request the bot made for an interaction: its callback, a follow-up, an edit or delete.

    `kind` is "callback", "followup", "edit_original", "edit_followup", "delete_original" or
    "delete_followup"; `after_s` is the time since the interaction was dispatched; `body` is the
    JSON the bot sent and `message` the message object the fake answered with (if any).
    """

    kind: str
    after_s: float
    body: dict[str, Any]
    message: dict[str, Any] | None = None

    @property
    def callback_type(self) -> int | None:
        return self.body.get("type") if self.kind == "callback" else None

    @property
    def data(self) -> dict[str, Any]:
        """The message-like part: a callback's `data`, or the whole body of a webhook call."""
        if self.kind == "callback":
            return self.body.get("data") or {}
        return self.body


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched; collects everything the bot did in answer to it."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    dispatched_at: float
    signal: ChangeSignal = field(repr=False)
    events: list[InteractionEvent] = field(default_factory=list)
    original_message_id: int | None = None
    failed: bool = False

    @property
    def callback(self) -> InteractionEvent | None:
        return next((event for event in self.events if event.kind == "callback"), None)

    @property
    def ack_latency(self) -> float | None:
        callback = self.callback
        return None if callback is None else callback.after_s

    def followups(self) -> list[InteractionEvent]:
        return [event for event in self.events if event.kind == "followup"]

    async def wait_for_response(self, timeout: float = WAIT_SECONDS) -> InteractionEvent:
        """The interaction callback (type 4/5/6/7/8/9) once the bot has sent it."""
        return await self.signal.wait_for(
            lambda: self.callback, timeout, f"a callback to interaction {self.id}"
        )

    async def wait_for(
        self,
        kind: str,
        predicate: Callable[[InteractionEvent], bool] | None = None,
        timeout: float = WAIT_SECONDS,
    ) -> InteractionEvent:
        """The first event of `kind` (e.g. "followup") matching `predicate`."""

        def probe() -> InteractionEvent | None:
            for event in self.events:
                if event.kind == kind and (predicate is None or predicate(event)):
                    return event
            return None

        return await self.signal.wait_for(probe, timeout, f"{kind} on interaction {self.id}")

    async def choices(self, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        """Autocomplete choices the bot answered with (callback type 8)."""
        callback = await self.wait_for_response(timeout)
        if callback.callback_type != CALLBACK_AUTOCOMPLETE:
            raise AssertionError(f"expected an autocomplete callback, got {callback.body}")
        return list(callback.data.get("choices", []))


@dataclass
class MessageEvent:
    """A message created, edited or deleted through any route (channel or interaction webhook)."""

    kind: str
    message: dict[str, Any]
    via: str

    @classmethod
    def snapshot(cls, kind: str, message: dict[str, Any], via: str) -> MessageEvent:
        return cls(kind=kind, message=copy.deepcopy(message), via=via)


@dataclass(frozen=True)
class Rejection:
    """A request the fake answered with a Discord error (e.g. code 10062, Unknown interaction)."""

    method: str
    path: str
    status: int
    code: int
    message: str


@dataclass
class GatewayConnection:
    """One websocket the client opened, with what it asked for and the heartbeats it sent."""

    query: dict[str, str]
    opened_at: float
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue, repr=False)
    heartbeats: list[float] = field(default_factory=list)
    identify: dict[str, Any] | None = None
    shard: tuple[int, int] | None = None  # (id, count) once identified or resumed
    resumed: bool = False
    ready: bool = False
    closed: bool = False
