"""Requests from processes that do not lead, carried out by the scheduler leader.

Only the leader writes training jobs and auto-posts (its scheduler and training queue are
their one writer, so no two processes race on a row). A gateway process that is asked to
train, cancel, or add or remove an auto-post files a row in ``tweetlike_requests``; the
leader looks for new rows every ``scheduler.poll_seconds``, claims each with a
compare-and-set (pending -> taken), carries it out through its own
:class:`bot.core.ports.JobControl` (the same code as its own users' requests) and writes the
answer, which the asking process reads back and shows.

Polling rather than PostgreSQL's LISTEN/NOTIFY: the same on SQLite and PostgreSQL, no
connection held open outside the pool, nothing lost while a listener reconnects, and an
indexed query every half second costs the database next to nothing
(``bench/leader_requests.py`` measures the pick-up time and the cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import Engine, delete, insert, select, update

from bot.core.ports import AutopostView, JobControl, TrainingTicket
from bot.core.replies import Requester
from bot.errors import TweetlikeError
from bot.jobs.state import database_now, new_id, requests_table
from bot.redaction import redact

log = logging.getLogger(__name__)

Operation = Literal["train", "cancel", "add_autopost", "remove_autopost"]
RequestState = Literal["pending", "taken", "done", "abandoned"]
# Answers nobody came back for (the asking process died) are removed after this long.
FORGET_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class Request:
    id: str
    operation: Operation
    arguments: dict[str, Any]
    sender: str


@dataclass(frozen=True)
class Outcome:
    state: RequestState
    result: Any = None
    error: str | None = None


class RequestTable:
    """The statements on ``tweetlike_requests``; async callers run them in a thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def submit(self, operation: Operation, arguments: dict[str, Any], sender: str) -> str:
        request_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(requests_table).values(
                    id=request_id,
                    operation=operation,
                    arguments=arguments,
                    state="pending",
                    sender=sender,
                    created_at=database_now(conn),
                )
            )
        return request_id

    def claim_pending(self) -> list[Request]:
        """Take every pending request, oldest first; each is claimed by one leader only."""
        query = (
            select(requests_table)
            .where(requests_table.c.state == "pending")
            .order_by(requests_table.c.created_at, requests_table.c.id)
        )
        claimed: list[Request] = []
        with self.engine.begin() as conn:
            for row in conn.execute(query).all():
                taken = conn.execute(
                    update(requests_table)
                    .where(requests_table.c.id == row.id, requests_table.c.state == "pending")
                    .values(state="taken")
                )
                if taken.rowcount == 1:
                    claimed.append(Request(row.id, row.operation, dict(row.arguments), row.sender))
        return claimed

    def answer(self, request_id: str, *, result: Any = None, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(requests_table)
                .where(requests_table.c.id == request_id)
                .values(
                    state="done",
                    result=result,
                    error=None if error is None else redact(error),
                )
            )

    def outcome(self, request_id: str) -> Outcome | None:
        query = select(requests_table).where(requests_table.c.id == request_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Outcome(row.state, row.result, row.error)

    def abandon(self, request_id: str) -> bool:
        """Withdraw a request no leader has taken; False if one took it meanwhile."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(requests_table)
                .where(requests_table.c.id == request_id, requests_table.c.state == "pending")
                .values(state="abandoned")
            )
        return result.rowcount == 1

    def forget(self, request_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(requests_table).where(requests_table.c.id == request_id))

    def forget_old(self) -> None:
        with self.engine.begin() as conn:
            cutoff = database_now(conn) - FORGET_AFTER_SECONDS
            conn.execute(
                delete(requests_table).where(
                    requests_table.c.state.in_(("done", "abandoned")),
                    requests_table.c.created_at < cutoff,
                )
            )


Handler = Callable[[Request], Awaitable[Any]]


# -- what travels in a request and its answer (JSON) ---------------------------------------


def requester_json(requester: Requester | None) -> dict[str, Any] | None:
    """The parts of a requester the leader needs: whom to answer, and where."""
    if requester is None:
        return None
    return {
        "user_id": requester.user_id,
        "name": requester.name,
        "channel_id": requester.channel_id,
        "guild_id": requester.guild_id,
    }


def requester_from(data: dict[str, Any] | None) -> Requester | None:
    return None if data is None else Requester(**data)


def ticket_from(data: dict[str, Any]) -> TrainingTicket:
    return TrainingTicket(**data)


def autopost_view_json(view: AutopostView) -> dict[str, Any]:
    return {**asdict(view), "prompts": list(view.prompts)}


def autopost_view_from(data: dict[str, Any]) -> AutopostView:
    return AutopostView(**{**data, "prompts": tuple(data["prompts"])})


async def carry_out(jobs: JobControl, request: Request) -> Any:
    """The leader runs a request through its own job control, as for its own users."""
    args = request.arguments
    if request.operation == "train":
        ticket = await jobs.request_training(
            list(args["handles"]),
            reason=args["reason"],
            requester=requester_from(args["requester"]),
            prompt=args["prompt"],
        )
        return asdict(ticket)
    if request.operation == "cancel":
        return await jobs.cancel(str(args["job_id"]))
    if request.operation == "add_autopost":
        view = await jobs.add_autopost(
            str(args["model"]),
            int(args["channel_id"]),
            every=args["every"],
            cron=args["cron"],
            prompts=list(args["prompts"]),
            post_to_x=bool(args["post_to_x"]),
        )
        return autopost_view_json(view)
    if request.operation == "remove_autopost":
        return await jobs.remove_autopost(str(args["autopost_id"]))
    raise TweetlikeError(f"unknown request '{request.operation}' (a newer version sent it?)")


class RequestServer:
    """The leader's side: picks up requests every ``poll_seconds`` and answers them.

    Each request runs in its own task, so a slow one (cancelling a running training waits
    for its subprocess to stop) holds up no other.
    """

    def __init__(self, table: RequestTable, handler: Handler, poll_seconds: float) -> None:
        self.table = table
        self.handler = handler
        self.poll_seconds = poll_seconds
        self._loop: asyncio.Task[None] | None = None
        self._working: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._serve(), name="leader-requests")

    async def stop(self) -> None:
        tasks = [task for task in (self._loop, *self._working) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self) -> None:
        tidied = False
        while True:
            try:
                if not tidied:
                    await asyncio.to_thread(self.table.forget_old)
                    tidied = True
                for request in await asyncio.to_thread(self.table.claim_pending):
                    task = asyncio.create_task(self._carry_out(request), name=f"req-{request.id}")
                    self._working.add(task)
                    task.add_done_callback(self._working.discard)
            except Exception as exc:
                log.warning("could not read requests from other processes: %s", exc)
            await asyncio.sleep(self.poll_seconds)

    async def _carry_out(self, request: Request) -> None:
        log.info("request %s from %s: %s", request.id, request.sender, request.operation)
        try:
            result = await self.handler(request)
        except TweetlikeError as exc:
            await asyncio.to_thread(self.table.answer, request.id, error=str(exc))
        except Exception:
            log.exception("request %s (%s) failed", request.id, request.operation)
            await asyncio.to_thread(
                self.table.answer,
                request.id,
                error="the scheduler leader failed to carry this out (see its log)",
            )
        else:
            await asyncio.to_thread(self.table.answer, request.id, result=result)


class RequestClient:
    """The asking side: files a request and waits for the leader's answer."""

    def __init__(
        self,
        table: RequestTable,
        sender: str,
        *,
        pickup_seconds: float,
        answer_seconds: float,
        check_every: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.sender = sender
        self.pickup_seconds = pickup_seconds
        self.answer_seconds = answer_seconds
        self.check_every = check_every
        self._clock = clock

    async def ask(self, operation: Operation, arguments: dict[str, Any]) -> Any:
        """The leader's result; its refusal (or a missing answer) as a TweetlikeError."""
        request_id = await asyncio.to_thread(self.table.submit, operation, arguments, self.sender)
        started = self._clock()
        while True:
            await asyncio.sleep(self.check_every)
            outcome = await asyncio.to_thread(self.table.outcome, request_id)
            if outcome is not None and outcome.state == "done":
                await asyncio.to_thread(self.table.forget, request_id)
                if outcome.error is not None:
                    raise TweetlikeError(outcome.error)
                return outcome.result
            waited = self._clock() - started
            pending = outcome is not None and outcome.state == "pending"
            if pending and waited > self.pickup_seconds:
                if await asyncio.to_thread(self.table.abandon, request_id):
                    raise TweetlikeError(
                        f"the scheduler leader did not take this request within "
                        f"{self.pickup_seconds:g} s, so nothing was done; try again "
                        "(tweetlike status shows the leader)"
                    )
            elif waited > self.answer_seconds:
                raise TweetlikeError(
                    f"the scheduler leader took this request but has not answered within "
                    f"{self.answer_seconds:g} s; /jobs shows whether it happened"
                )
